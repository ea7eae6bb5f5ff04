package main

// `bitzel-bench bazel`: a generated workspace (bazel_workspace.go)
// built by Debian's Bazel 4.2.3, offline, three ways in one run:
//   - local: Bazel's own linux-sandbox (a fresh output base: cold);
//   - remote: every spawn on a fresh `bitzel-worker serve` (fresh data
//     directory: cold caches; a fresh output base);
//   - rebuild: `bazel clean`, then the same build against that serve
//     (every spawn a remote cache hit).
// Rounds alternate local/remote order; the table gives per-round rows,
// the ratios to that round's local build and their medians.

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/internal/procfs"
)

type bazelOptions struct {
	binDir, outDir, workDir, bazel, e2eWorkspace, generate, remoteFlags string
	libs, rounds, jobs, maxIdle                                         int
	seed                                                                int64
	timeout                                                             time.Duration
	netns                                                               bool
}

func parseBazelFlags(args []string) (*bazelOptions, error) {
	o := &bazelOptions{}
	fs := flag.NewFlagSet("bazel", flag.ContinueOnError)
	fs.StringVar(&o.binDir, "bin", "bin", "`folder` holding bitzel-worker and bitzel-sandbox-init")
	fs.StringVar(&o.outDir, "out", "bench/out", "`folder` for bazel.md")
	fs.StringVar(&o.workDir, "work", "", "scratch `folder` (default: a new one under $TMPDIR, removed after)")
	fs.StringVar(&o.bazel, "bazel", "bazel", "the Bazel `binary` (Debian's bazel-bootstrap, 4.2.3)")
	fs.StringVar(&o.e2eWorkspace, "e2e-workspace", "e2e/bazel/workspace", "the repository's e2e/bazel/workspace `folder`: its WORKSPACE and third_party/ stand-ins are copied into the generated workspace")
	fs.StringVar(&o.generate, "generate", "", "only write the generated workspace into this `folder` and exit")
	fs.IntVar(&o.libs, "libs", 80, "C libraries in the generated workspace")
	fs.Int64Var(&o.seed, "seed", 1, "seed of the generated workspace (its DAG and sources)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each builds local and remote (+ rebuild), alternating their order")
	fs.StringVar(&o.remoteFlags, "remote-flags", "", "more Bazel `flags` for the remote builds, space-separated (e.g. --remote_download_minimal)")
	fs.IntVar(&o.jobs, "jobs", 8, "Bazel --jobs of the remote builds (the local build uses Bazel's default)")
	fs.IntVar(&o.maxIdle, "max-idle-secs", 900, "Bazel's --max_idle_secs: a Bazel server left behind by a killed harness exits after this")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "longest one Bazel command may take")
	fs.BoolVar(&o.netns, "netns", true, "re-run inside `unshare -n` (serve's port private to the run)")
	if err := parseSubcommandFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if o.rounds < 1 || o.jobs < 1 || o.libs < 2 {
		return nil, usageError{fmt.Errorf("-rounds and -jobs must be at least 1, -libs at least 2")}
	}
	return o, nil
}

// usageError is a bad command line: exit status 2, as the flag
// package's own.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// bazelMeasurement is one build.
type bazelMeasurement struct {
	round             int
	side              string // local, remote, rebuild
	wall              time.Duration
	bazelCPU          time.Duration // Bazel server + client
	workerCPU         time.Duration // serve + launcher + the sandboxes
	workerSplit       string        // workerCPU by process, seconds
	summary           processSummary
	load              string
	localWall, locCPU time.Duration // that round's local build, for the ratios
}

func (m bazelMeasurement) totalCPU() time.Duration { return m.bazelCPU + m.workerCPU }

// processSummary is Bazel's "INFO: 324 processes: 80 internal, 244
// remote." line.
type processSummary struct {
	line  string
	total int
	kinds map[string]int
}

var processSummaryRE = regexp.MustCompile(`^INFO: (\d+) process(?:es)?(?:[:.]\s*(.*?))?\.?\s*$`)

// parseProcessSummary finds the last process-summary line of a Bazel
// log.
func parseProcessSummary(log string) (processSummary, error) {
	var found *processSummary
	for _, line := range strings.Split(log, "\n") {
		line = strings.TrimRight(line, "\r")
		m := processSummaryRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := processSummary{line: line, kinds: map[string]int{}}
		s.total, _ = strconv.Atoi(m[1])
		sum := 0
		for _, part := range strings.Split(m[2], ",") {
			part = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(part), "."))
			if part == "" {
				continue
			}
			count, kind, ok := strings.Cut(part, " ")
			n, err := strconv.Atoi(count)
			if !ok || err != nil {
				return processSummary{}, fmt.Errorf("process summary %q: cannot read %q", line, part)
			}
			s.kinds[strings.TrimSpace(kind)] += n
			sum += n
		}
		if sum != s.total {
			return processSummary{}, fmt.Errorf("process summary %q: the kinds add up to %d, not %d", line, sum, s.total)
		}
		found = &s
	}
	if found == nil {
		return processSummary{}, errors.New("no process summary line (\"INFO: N processes: ...\") in Bazel's output")
	}
	return *found, nil
}

// only fails unless every spawn is internal or of one of kinds.
func (s processSummary) only(kinds ...string) error {
	for kind, n := range s.kinds {
		ok := kind == "internal"
		for _, k := range kinds {
			ok = ok || kind == k
		}
		if !ok {
			return fmt.Errorf("%d spawn(s) ran as %q, not %s: %s", n, kind, strings.Join(kinds, " or "), s.line)
		}
	}
	return nil
}

// checkBuilds verifies that a round measured what it claims: the local
// build ran in linux-sandbox, the remote build ran every spawn
// remotely, and the rebuild was all remote cache hits, as many as the
// remote build ran.
func checkBuilds(local, remote, rebuild processSummary) error {
	if err := local.only("linux-sandbox"); err != nil {
		return fmt.Errorf("local build: %w", err)
	}
	if err := remote.only("remote"); err != nil {
		return fmt.Errorf("remote build: %w", err)
	}
	if remote.kinds["remote"] == 0 {
		return fmt.Errorf("remote build ran no remote spawn: %s", remote.line)
	}
	if err := rebuild.only("remote cache hit"); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	if rebuild.kinds["remote cache hit"] != remote.kinds["remote"] {
		return fmt.Errorf("rebuild had %d remote cache hits, the remote build ran %d remote spawns: %s", rebuild.kinds["remote cache hit"], remote.kinds["remote"], rebuild.line)
	}
	if l, r := local.total-local.kinds["internal"], remote.total-remote.kinds["internal"]; l != r {
		return fmt.Errorf("local build ran %d spawns, the remote build %d: not the same build (%s; %s)", l, r, local.line, remote.line)
	}
	return nil
}

func bazelMain(args []string) error {
	o, err := parseBazelFlags(args)
	if err != nil {
		return err
	}
	w, err := generateWorkspace(o.libs, o.seed)
	if err != nil {
		return err
	}
	rulesJava, err := debianRepository("bazel-rules-java")
	if err != nil {
		return err
	}
	platforms, err := debianRepository("bazel-platforms")
	if err != nil {
		return err
	}
	if o.generate != "" {
		return w.writeWorkspace(o.generate, o.e2eWorkspace, rulesJava, platforms)
	}
	if o.netns && os.Getenv("BITZEL_BENCH_NETNS") == "" {
		return reexecSubcommandInNetns("bazel", args)
	}
	work := o.workDir
	if work == "" {
		if work, err = os.MkdirTemp("", "bitzel-bench-bazel-"); err != nil {
			return err
		}
	}
	if work, err = filepath.Abs(work); err != nil {
		return err
	}
	// A root worker's actions run as unprivileged ids that must reach
	// serve's data directory under work.
	os.Chmod(work, 0o755)
	bin, err := filepath.Abs(o.binDir)
	if err != nil {
		return err
	}
	b := &bazelRun{o: o, work: work, ws: filepath.Join(work, "ws")}
	defer b.cleanup(o.workDir == "")
	b.cleanupOnSignal(o.workDir == "")
	if err := w.writeWorkspace(b.ws, o.e2eWorkspace, rulesJava, platforms); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "workspace: %d libraries, seed %d, in %s; load average at the start: %s\n", o.libs, o.seed, b.ws, loadAverage())

	var results []bazelMeasurement
	for round := 1; round <= o.rounds; round++ {
		var local, remote, rebuild bazelMeasurement
		runLocal := func() error {
			local, err = b.buildLocal(round)
			return err
		}
		runRemote := func() error {
			remote, rebuild, err = b.buildRemote(round, bin)
			return err
		}
		steps := []func() error{runLocal, runRemote}
		if round%2 == 0 {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("round %d: %w", round, err)
			}
		}
		if err := checkBuilds(local.summary, remote.summary, rebuild.summary); err != nil {
			return fmt.Errorf("round %d: %w", round, err)
		}
		for _, m := range []*bazelMeasurement{&local, &remote, &rebuild} {
			m.localWall, m.locCPU = local.wall, local.totalCPU()
			fmt.Fprintf(os.Stderr, "round %d %-7s wall %6.1fs (x%.2f local), CPU Bazel %6.1fs + worker %6.1fs (x%.2f local); %s\n",
				round, m.side, m.wall.Seconds(), m.wallRatio(), m.bazelCPU.Seconds(), m.workerCPU.Seconds(), m.cpuRatio(), m.summary.line)
			if m.workerSplit != "" {
				fmt.Fprintf(os.Stderr, "round %d %-7s worker CPU s by process: %s\n", round, m.side, m.workerSplit)
			}
		}
		results = append(results, local, remote, rebuild)
	}
	md := bazelMarkdown(results, o)
	fmt.Print(md)
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.outDir, "bazel.md"), []byte(md), 0o644)
}

func (m bazelMeasurement) wallRatio() float64 { return ratio(m.wall, m.localWall) }
func (m bazelMeasurement) cpuRatio() float64  { return ratio(m.totalCPU(), m.locCPU) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// bazelRun holds what the run started: every output base whose Bazel
// server may be up, and serve; cleanup stops them all.
type bazelRun struct {
	o        *bazelOptions
	work, ws string
	lock     sync.Mutex
	bases    []string
	srv      *server
	current  *exec.Cmd // the Bazel client running now
	done     bool
	once     sync.Once
}

func (b *bazelRun) startup(base string) []string {
	return []string{"--nohome_rc", "--output_user_root=" + filepath.Join(b.work, "bazel-root"), "--output_base=" + base,
		fmt.Sprintf("--max_idle_secs=%d", b.o.maxIdle)}
}

// commonBuildFlags are those of every build: offline, hermetic
// environment, plain output. --nosandbox_debug undoes Debian's
// /etc/bazel/bazelrc, which keeps every local sandbox directory;
// --symlink_prefix=/ makes no bazel-* links in the workspace, which
// the next output base would take for packages.
var commonBuildFlags = []string{"--experimental_repository_disable_download", "--repository_cache=", "--incompatible_strict_action_env",
	"--nosandbox_debug", "--symlink_prefix=/", "--verbose_failures", "--test_output=errors", "--curses=no", "--color=no", "--show_progress_rate_limit=30"}

// bazelCommand runs one Bazel command in the workspace with output base
// base, its output in logs/NAME; it returns the output, the wall time
// and the client's CPU.
func (b *bazelRun) bazelCommand(base, name string, args ...string) (string, time.Duration, time.Duration, error) {
	if err := os.MkdirAll(filepath.Join(b.work, "logs"), 0o755); err != nil {
		return "", 0, 0, err
	}
	b.lock.Lock()
	if b.done {
		b.lock.Unlock()
		return "", 0, 0, errors.New("stopping")
	}
	known := false
	for _, x := range b.bases {
		known = known || x == base
	}
	if !known {
		b.bases = append(b.bases, base)
	}
	b.lock.Unlock()
	logPath := filepath.Join(b.work, "logs", name)
	log, err := os.Create(logPath)
	if err != nil {
		return "", 0, 0, err
	}
	defer log.Close()
	cmd := exec.Command(b.o.bazel, append(b.startup(base), args...)...)
	cmd.Dir = b.ws
	cmd.Stdout, cmd.Stderr = log, log
	start := time.Now()
	b.lock.Lock()
	if err := cmd.Start(); err != nil {
		b.lock.Unlock()
		return "", 0, 0, fmt.Errorf("bazel %s: %w", args[0], err)
	}
	b.current = cmd
	b.lock.Unlock()
	timer := time.AfterFunc(b.o.timeout, func() { cmd.Process.Kill() })
	err = cmd.Wait()
	timer.Stop()
	b.lock.Lock()
	b.current = nil
	b.lock.Unlock()
	wall := time.Since(start)
	out, _ := os.ReadFile(logPath)
	if err != nil {
		return string(out), wall, 0, fmt.Errorf("bazel %s (%s) failed after %s (%v); the end of %s:\n%s", args[0], name, wall.Round(time.Second), err, logPath, tail(string(out), 40))
	}
	return string(out), wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// serverPID is the Bazel server's pid, from the output base.
func serverPID(base string) (int, error) {
	data, err := os.ReadFile(filepath.Join(base, "server", "server.pid.txt"))
	if err != nil {
		return 0, fmt.Errorf("the Bazel server's pid: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// measured runs `bazel test //...` and returns its measurement: wall
// time, the client's CPU plus the server's CPU during the command
// (with the local spawns it reaped), plus that of worker pids.
func (b *bazelRun) measured(round int, side, base string, flags []string, worker func() []int) (bazelMeasurement, error) {
	// The server is started first, untimed: both sides would pay the
	// same JVM start-up, which is not what is compared.
	if _, _, _, err := b.bazelCommand(base, fmt.Sprintf("round%d-%s-info", round, side), "info", "release"); err != nil {
		return bazelMeasurement{}, err
	}
	pid, err := serverPID(base)
	if err != nil {
		return bazelMeasurement{}, err
	}
	serverCPU0, _ := procfs.CPUTime(pid)
	var workerCPU0 time.Duration
	var split0 cpuSplit
	if worker != nil {
		workerCPU0 = cpuTime(worker())
		split0 = readCPUSplit(worker())
	}
	args := append(append([]string{"test"}, commonBuildFlags...), flags...)
	args = append(args, "--", "//...")
	out, wall, clientCPU, err := b.bazelCommand(base, fmt.Sprintf("round%d-%s", round, side), args...)
	if err != nil {
		return bazelMeasurement{}, err
	}
	serverCPU, err := procfs.CPUTime(pid)
	if err != nil {
		return bazelMeasurement{}, fmt.Errorf("the Bazel server's CPU time: %w", err)
	}
	m := bazelMeasurement{round: round, side: side, wall: wall, bazelCPU: clientCPU + serverCPU - serverCPU0, load: loadAverage()}
	if worker != nil {
		// Let the last sandboxes be reaped into the launcher's
		// cstime.
		time.Sleep(300 * time.Millisecond)
		m.workerCPU = cpuTime(worker()) - workerCPU0
		m.workerSplit = readCPUSplit(worker()).seconds(split0)
	}
	if m.summary, err = parseProcessSummary(out); err != nil {
		return bazelMeasurement{}, fmt.Errorf("%s build: %w", side, err)
	}
	return m, nil
}

func (b *bazelRun) buildLocal(round int) (bazelMeasurement, error) {
	base := filepath.Join(b.work, fmt.Sprintf("base-local-%d", round))
	defer b.shutdown(base)
	return b.measured(round, "local", base, []string{"--spawn_strategy=linux-sandbox"}, nil)
}

// buildRemote builds against a fresh serve, then cleans and rebuilds.
func (b *bazelRun) buildRemote(round int, bin string) (bazelMeasurement, bazelMeasurement, error) {
	srv, err := startServer(bin, b.work)
	if err != nil {
		return bazelMeasurement{}, bazelMeasurement{}, err
	}
	b.lock.Lock()
	b.srv = srv
	b.lock.Unlock()
	defer func() {
		b.lock.Lock()
		b.srv = nil
		b.lock.Unlock()
		srv.stop()
	}()
	base := filepath.Join(b.work, fmt.Sprintf("base-remote-%d", round))
	defer b.shutdown(base)
	flags := []string{"--remote_executor=grpc://" + srv.address, "--spawn_strategy=remote", "--remote_local_fallback=false", fmt.Sprintf("--jobs=%d", b.o.jobs)}
	flags = append(flags, strings.Fields(b.o.remoteFlags)...)
	remote, err := b.measured(round, "remote", base, flags, srv.processes)
	if err != nil {
		return bazelMeasurement{}, bazelMeasurement{}, fmt.Errorf("%w (serve's log: %s)", err, filepath.Join(b.work, "serve.log"))
	}
	if _, _, _, err := b.bazelCommand(base, fmt.Sprintf("round%d-clean", round), "clean"); err != nil {
		return bazelMeasurement{}, bazelMeasurement{}, err
	}
	rebuild, err := b.measured(round, "rebuild", base, flags, srv.processes)
	if err != nil {
		return bazelMeasurement{}, bazelMeasurement{}, err
	}
	return remote, rebuild, nil
}

// shutdown stops the Bazel server of base: `bazel shutdown`, else kill
// the pid it recorded.
func (b *bazelRun) shutdown(base string) {
	if _, err := os.Stat(filepath.Join(base, "server")); err != nil {
		return
	}
	cmd := exec.Command(b.o.bazel, append(b.startup(base), "shutdown")...)
	cmd.Dir = b.ws
	done := make(chan error, 1)
	if err := cmd.Start(); err == nil {
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
			if err == nil {
				return
			}
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
		}
	}
	if pid, err := serverPID(base); err == nil {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// cleanup stops every Bazel server and serve, and removes the scratch
// folder when the harness made it. It runs once: a second caller (the
// deferred one, after a signal) waits for the first.
func (b *bazelRun) cleanup(removeWork bool) {
	b.once.Do(func() { b.stopAll(removeWork) })
}

func (b *bazelRun) stopAll(removeWork bool) {
	b.lock.Lock()
	b.done = true
	bases, srv, current := b.bases, b.srv, b.current
	b.srv = nil
	b.lock.Unlock()
	// A running client is interrupted first (Bazel cancels the
	// build): `bazel shutdown` would wait for its command to end.
	if current != nil {
		current.Process.Signal(os.Interrupt)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			b.lock.Lock()
			running := b.current != nil
			b.lock.Unlock()
			if !running {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, base := range bases {
		b.shutdown(base)
	}
	if srv != nil {
		srv.stop()
	}
	if removeWork {
		fsutil.RemoveAll(b.work)
	}
}

func (b *bazelRun) cleanupOnSignal(removeWork bool) {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		fmt.Fprintln(os.Stderr, "bitzel-bench bazel: interrupted; stopping Bazel and serve")
		b.cleanup(removeWork)
		os.Exit(130)
	}()
}

func medianRatio(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64{}, v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// bazelMarkdown is the table of every build and the medians of the
// ratios over rounds.
func bazelMarkdown(results []bazelMeasurement, o *bazelOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## bitzel-bench bazel, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- workspace: %d C libraries, seed %d; `bazel test //...`; remote --jobs=%d %s, local Bazel's default\n", o.libs, o.seed, o.jobs, o.remoteFlags)
	b.WriteString("- ratio = the build's figure / that round's local linux-sandbox build's; CPU = Bazel server + client (+ serve, its launcher and the sandboxes)\n\n")
	b.WriteString("| round | build | wall s | x local | Bazel CPU s | worker CPU s | total CPU s | x local | processes | load |\n|---|---|---|---|---|---|---|---|---|---|\n")
	walls, cpus := map[string][]float64{}, map[string][]float64{}
	var sides []string
	for _, m := range results {
		if _, ok := walls[m.side]; !ok {
			sides = append(sides, m.side)
		}
		walls[m.side] = append(walls[m.side], m.wallRatio())
		cpus[m.side] = append(cpus[m.side], m.cpuRatio())
		fmt.Fprintf(&b, "| %d | %s | %.1f | %.2f | %.1f | %.1f | %.1f | %.2f | %s | %s |\n", m.round, m.side, m.wall.Seconds(), m.wallRatio(),
			m.bazelCPU.Seconds(), m.workerCPU.Seconds(), m.totalCPU().Seconds(), m.cpuRatio(), strings.TrimPrefix(m.summary.line, "INFO: "), m.load)
	}
	b.WriteString("\nMedians over rounds:\n\n| build | wall x local (median, range) | CPU x local (median, range) |\n|---|---|---|\n")
	for _, side := range sides {
		if side == "local" {
			continue
		}
		w, c := walls[side], cpus[side]
		fmt.Fprintf(&b, "| %s/local | %.2f (%.2f-%.2f) | %.2f (%.2f-%.2f) |\n", side, medianRatio(w), minOf(w), maxOf(w), medianRatio(c), minOf(c), maxOf(c))
	}
	return b.String()
}

func minOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
