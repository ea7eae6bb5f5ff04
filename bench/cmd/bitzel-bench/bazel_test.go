package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// buildRules reads the rules of a generated BUILD file: for each
// `kind(name = ...)` block, its string-list attributes, as Bazel would
// see them (the test reads the rendered text, not the model).
func buildRules(t *testing.T, text string) map[string]map[string][]string {
	t.Helper()
	rules := map[string]map[string][]string{}
	block := regexp.MustCompile(`(?s)\n(\w+)\(\n(.*?)\n\)\n`)
	attr := regexp.MustCompile(`(?m)^    (\w+) = (.*),$`)
	str := regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
	for _, b := range block.FindAllStringSubmatch("\n"+text, -1) {
		attrs := map[string][]string{"kind": {b[1]}}
		for _, a := range attr.FindAllStringSubmatch(b[2], -1) {
			for _, s := range str.FindAllStringSubmatch(a[2], -1) {
				attrs[a[1]] = append(attrs[a[1]], strings.ReplaceAll(s[1], `\"`, `"`))
			}
		}
		if len(attrs["name"]) != 1 {
			t.Fatalf("a %s without one name in:\n%s", b[1], text)
		}
		rules[attrs["name"][0]] = attrs
	}
	return rules
}

func TestGeneratedWorkspaceIsADagOfNLibraries(t *testing.T) {
	for _, n := range []int{2, 20, 80} {
		w, err := generateWorkspace(n, 7)
		if err != nil {
			t.Fatal(err)
		}
		// The libraries and their deps as the BUILD files say.
		deps := map[int][]int{}
		for i := 0; ; i++ {
			text, ok := w.files[fmt.Sprintf("lib/l%03d/BUILD", i)]
			if !ok {
				if i != n {
					t.Fatalf("%d libraries generated, want %d", i, n)
				}
				break
			}
			rule := buildRules(t, text)[fmt.Sprintf("l%03d", i)]
			if rule == nil || rule["kind"][0] != "cc_library" {
				t.Fatalf("lib/l%03d/BUILD has no cc_library l%03d:\n%s", i, i, text)
			}
			for _, d := range rule["deps"] {
				var j int
				if _, err := fmt.Sscanf(d, "//lib/l%d", &j); err != nil || j < 0 || j >= n {
					t.Fatalf("l%03d depends on %q, not a generated library", i, d)
				}
				deps[i] = append(deps[i], j)
			}
			for _, src := range rule["srcs"] {
				if _, ok := w.files[fmt.Sprintf("lib/l%03d/%s", i, src)]; !ok && !generatedOut(w, fmt.Sprintf("lib/l%03d", i), src) {
					t.Errorf("l%03d: source %s is neither written nor a genrule output", i, src)
				}
			}
		}
		// Acyclic: a depth-first search finds no back edge.
		state := map[int]int{} // 1 on the stack, 2 done
		var visit func(int, []int)
		visit = func(i int, path []int) {
			if state[i] == 1 {
				t.Fatalf("n=%d: a cycle: %v -> %d", n, path, i)
			}
			if state[i] == 2 {
				return
			}
			state[i] = 1
			for _, d := range deps[i] {
				visit(d, append(path, i))
			}
			state[i] = 2
		}
		for i := 0; i < n; i++ {
			if i > 0 && len(deps[i]) == 0 {
				t.Errorf("n=%d: l%03d depends on nothing", n, i)
			}
			visit(i, nil)
		}
		// The binary links every library: those no library depends
		// on are its deps, the rest are reached through them.
		app := buildRules(t, w.files["app/BUILD"])["app"]
		reached := map[int]bool{}
		var reach func(int)
		reach = func(i int) {
			if !reached[i] {
				reached[i] = true
				for _, d := range deps[i] {
					reach(d)
				}
			}
		}
		for _, d := range app["deps"] {
			var j int
			fmt.Sscanf(d, "//lib/l%d", &j)
			reach(j)
		}
		if len(reached) != n {
			t.Errorf("n=%d: //app reaches %d libraries", n, len(reached))
		}
		if !strings.Contains(w.files["tests/app_test.sh"], fmt.Sprintf("reached %d libraries", n)) {
			t.Errorf("n=%d: the test does not expect %d libraries", n, n)
		}
	}
}

func generatedOut(w *bazelWorkspace, pkg, out string) bool {
	for _, g := range w.genrules {
		for _, o := range g.outs {
			if g.pkg == pkg && o == out {
				return true
			}
		}
	}
	return false
}

// Every genrule lists, as outs in sub-directories, exactly the files
// its command writes ($(location X) of something not in srcs), and the
// nested outputs of //gen are consumed by another package.
func TestGeneratedGenrulesListTheirNestedOuts(t *testing.T) {
	w, err := generateWorkspace(30, 3)
	if err != nil {
		t.Fatal(err)
	}
	location := regexp.MustCompile(`\$\(location ([^)]+)\)`)
	count := 0
	consumedElsewhere := false
	for path, text := range w.files {
		if !strings.HasSuffix(path, "/BUILD") {
			continue
		}
		pkg := strings.TrimSuffix(path, "/BUILD")
		for name, r := range buildRules(t, text) {
			if r["kind"][0] != "genrule" {
				continue
			}
			count++
			if len(r["outs"]) == 0 || len(r["cmd"]) != 1 {
				t.Fatalf("%s:%s has no outs or no cmd", pkg, name)
			}
			srcs, outs := map[string]bool{}, map[string]bool{}
			for _, s := range r["srcs"] {
				srcs[s] = true
				if strings.HasPrefix(s, "//") && !strings.HasPrefix(s, "//"+pkg+":") {
					consumedElsewhere = true
				}
			}
			for _, o := range r["outs"] {
				if !strings.Contains(o, "/") {
					t.Errorf("%s:%s: out %s is not in a sub-directory", pkg, name, o)
				}
				outs[o] = true
			}
			written := map[string]bool{}
			for _, m := range location.FindAllStringSubmatch(r["cmd"][0], -1) {
				if !srcs[m[1]] {
					written[m[1]] = true
					if !outs[m[1]] {
						t.Errorf("%s:%s writes %s, which is not in its outs", pkg, name, m[1])
					}
				}
			}
			for o := range outs {
				if !written[o] {
					t.Errorf("%s:%s lists %s in outs but its cmd does not write it", pkg, name, o)
				}
			}
		}
	}
	// 30 libraries: l003, l013, l023 have tables; plus //gen and //report.
	if count != 5 {
		t.Errorf("%d genrules, want 5", count)
	}
	if !consumedElsewhere {
		t.Error("no genrule consumes another package's outputs")
	}
	if !strings.Contains(w.files["tests/BUILD"], "sh_test(") {
		t.Error("no sh_test")
	}
}

func TestGeneratedWorkspaceIsDeterministicForASeed(t *testing.T) {
	a, _ := generateWorkspace(40, 11)
	b, _ := generateWorkspace(40, 11)
	c, _ := generateWorkspace(40, 12)
	if len(a.files) != len(b.files) {
		t.Fatalf("%d and %d files for the same seed", len(a.files), len(b.files))
	}
	for p, text := range a.files {
		if b.files[p] != text {
			t.Errorf("%s differs between two generations with the same seed", p)
		}
	}
	differ := 0
	for p, text := range a.files {
		if c.files[p] != text {
			differ++
		}
	}
	if differ == 0 {
		t.Error("another seed generated the same workspace")
	}
	if _, err := generateWorkspace(1, 1); err == nil {
		t.Error("one library accepted")
	}
}

func TestParseProcessSummary(t *testing.T) {
	log := "INFO: Analyzed 26 targets (44 packages loaded, 212 targets configured).\n" +
		"INFO: 136 processes: 46 internal, 90 linux-sandbox.\n" +
		"INFO: Build completed successfully, 136 total actions\n"
	s, err := parseProcessSummary(log)
	if err != nil {
		t.Fatal(err)
	}
	if s.total != 136 || s.kinds["internal"] != 46 || s.kinds["linux-sandbox"] != 90 || len(s.kinds) != 2 {
		t.Errorf("parsed %+v", s)
	}
	// The last line counts; kinds with spaces; one process.
	s, err = parseProcessSummary(log + "INFO: 7 processes: 2 internal, 4 remote cache hit, 1 remote.\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if s.total != 7 || s.kinds["remote cache hit"] != 4 || s.kinds["remote"] != 1 {
		t.Errorf("parsed %+v", s)
	}
	if s, err = parseProcessSummary("INFO: 1 process: 1 internal.\n"); err != nil || s.kinds["internal"] != 1 {
		t.Errorf("one process: %+v, %v", s, err)
	}
	if s, err = parseProcessSummary("INFO: 0 processes.\n"); err != nil || s.total != 0 || len(s.kinds) != 0 {
		t.Errorf("no process: %+v, %v", s, err)
	}
	for _, bad := range []string{"INFO: Build completed successfully\n", "INFO: 5 processes: 2 internal, 2 remote.\n", "INFO: 3 processes: x internal.\n"} {
		if s, err := parseProcessSummary(bad); err == nil {
			t.Errorf("%q parsed as %+v", bad, s)
		}
	}
}

func summary(t *testing.T, line string) processSummary {
	t.Helper()
	s, err := parseProcessSummary(line)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCheckBuildsFailsLoudly(t *testing.T) {
	local := summary(t, "INFO: 136 processes: 46 internal, 90 linux-sandbox.")
	remote := summary(t, "INFO: 136 processes: 46 internal, 90 remote.")
	rebuild := summary(t, "INFO: 136 processes: 46 internal, 90 remote cache hit.")
	if err := checkBuilds(local, remote, rebuild); err != nil {
		t.Fatalf("a right round refused: %v", err)
	}
	cases := map[string][3]string{
		`ran as "processwrapper-sandbox"`: {"INFO: 136 processes: 46 internal, 80 linux-sandbox, 10 processwrapper-sandbox.", remote.line, rebuild.line},
		`"local"`:                         {local.line, "INFO: 136 processes: 46 internal, 89 remote, 1 local.", rebuild.line},
		"no remote":                       {local.line, "INFO: 46 processes: 46 internal.", "INFO: 46 processes: 46 internal."},
		`"remote"`:                        {local.line, remote.line, "INFO: 136 processes: 46 internal, 89 remote cache hit, 1 remote."},
		"85 remote cache hits":            {local.line, remote.line, "INFO: 131 processes: 46 internal, 85 remote cache hit."},
		"not the same build":              {"INFO: 130 processes: 46 internal, 84 linux-sandbox.", remote.line, rebuild.line},
	}
	for want, c := range cases {
		err := checkBuilds(summary(t, c[0]), summary(t, c[1]), summary(t, c[2]))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: error %v, want one saying %s", c, err, want)
		}
	}
}

func TestBazelMarkdownRatiosAndMedians(t *testing.T) {
	s := func(d float64) time.Duration { return time.Duration(d * float64(time.Second)) }
	var results []bazelMeasurement
	// Three rounds: local 100, 110, 90 s; remote 1.2x, 0.9x, 1.0x;
	// rebuild 0.1x, 0.2x, 0.15x. CPU: local 200 s; remote Bazel 50 +
	// worker 150 (1.0x) and the like.
	locals := []float64{100, 110, 90}
	remotes := []float64{1.2, 0.9, 1.0}
	rebuilds := []float64{0.1, 0.2, 0.15}
	for i := range locals {
		l := s(locals[i])
		add := func(side string, wall float64, bazelCPU, workerCPU float64) {
			results = append(results, bazelMeasurement{round: i + 1, side: side, wall: s(wall), bazelCPU: s(bazelCPU), workerCPU: s(workerCPU),
				localWall: l, locCPU: s(200), summary: processSummary{line: "INFO: 3 processes: 3 " + side + "."}, load: "1.00"})
		}
		add("local", locals[i], 200, 0)
		add("remote", remotes[i]*locals[i], 50, 150*float64(i+1))
		add("rebuild", rebuilds[i]*locals[i], 20, 0)
	}
	md := bazelMarkdown(results, &bazelOptions{libs: 80, seed: 1, jobs: 8})
	for _, want := range []string{
		"| 2 | remote | 99.0 | 0.90 | 50.0 | 300.0 | 350.0 | 1.75 | 3 processes: 3 remote. | 1.00 |",
		"| 3 | rebuild | 13.5 | 0.15 | 20.0 | 0.0 | 20.0 | 0.10 |",
		"| remote/local | 1.00 (0.90-1.20) | 1.75 (1.00-2.50) |",
		"| rebuild/local | 0.15 (0.10-0.20) | 0.10 (0.10-0.10) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the table has no %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "| local/local") {
		t.Errorf("a local/local median:\n%s", md)
	}
	if got := medianRatio([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median of 1..4 = %v", got)
	}
}
