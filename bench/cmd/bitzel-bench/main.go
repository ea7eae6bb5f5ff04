// bitzel-bench runs the same workloads through bitzel-worker and
// through baselines in the same run, and prints every figure as a
// ratio against its baseline (absolute times drift on shared
// machines; ratios measured side by side do not).
//
// By default it starts the real `bitzel-worker serve` on free loopback
// ports and drives it over gRPC as Bazel does (FindMissingBlobs,
// BatchUpdateBlobs, Execute). With --remote it drives any REAPI
// endpoint instead, such as a Buildbarn frontend in front of bb_worker
// or of `bitzel-worker worker`.
//
//	go build -o bench/out/bin/ ./cmd/... ./bench/cmd/bitzel-bench
//	bench/out/bin/bitzel-bench --bin bench/out/bin --out bench/out
//
// See bench/README.md.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
)

type harness struct {
	ep          *endpoint
	pids        func() []int
	metrics     string // the worker's /metrics, for Go heap figures
	work        string
	bwrap       bool
	passThrough bool
	report      *report
	seq         atomic.Int64
	seeds       atomic.Int64
	idleRSS     rss
	idleGo      map[string]float64
	peakRSS     rss
}

func (h *harness) next() int { return int(h.seq.Add(1)) }

// seed returns a new content seed: trees drawn from different seeds
// share no file, so each is cold for the worker.
func (h *harness) seed() int64 { return time.Now().UnixNano()/1000 + h.seeds.Add(1)*1_000_003 }

func (h *harness) add(r row) { h.report.add(r) }

func intList(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad number %q\n", f)
			os.Exit(2)
		}
		out = append(out, n)
	}
	return out
}

func main() {
	if len(os.Args) > 1 {
		subcommands := map[string]func([]string) error{"buildbarn": buildbarnMain, "bazel": bazelMain}
		if sub, ok := subcommands[os.Args[1]]; ok {
			exitSubcommand(os.Args[1], sub(os.Args[2:]))
			return
		}
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bitzel-bench:", err)
		os.Exit(1)
	}
}

// mainOptions are the flags of the main harness.
type mainOptions struct {
	binDir, outDir, workDir, remote, label, metricsAddress, watch, only *string
	trivialN, perClient, minActions, soak                               *int
	clients, files, layers, serveArgs                                   *string
	passThrough, quick                                                  *bool
}

func parseMainFlags() *mainOptions {
	o := &mainOptions{}
	o.binDir = flag.String("bin", "bin", "`directory` holding bitzel-worker and bitzel-sandbox-init")
	o.outDir = flag.String("out", "bench/out", "`directory` for results.csv and results.md")
	o.workDir = flag.String("work", "", "scratch `directory` (default: a new one under $TMPDIR); serve's data directory goes there too")
	o.remote = flag.String("remote", "", "drive this REAPI `host:port` instead of starting serve (e.g. a Buildbarn frontend)")
	o.label = flag.String("label", "", "name of the worker in the tables (default: bitzel-worker serve, or the --remote address)")
	o.metricsAddress = flag.String("metrics", "", "with --remote: `host:port` of the worker's Prometheus /metrics (Go heap and goroutines)")
	o.watch = flag.String("watch-pids", "", "with --remote: comma-separated `pids` whose RSS and CPU are the worker's (e.g. bb_worker,bb_runner)")
	o.only = flag.String("only", "trivial,throughput,memory,scaling,bitbake,outputs", "sections to run: trivial, throughput, memory, input (the 10,000-file root only), scaling, bitbake, outputs")
	o.trivialN = flag.Int("trivial", 300, "actions timed for per-action latency")
	o.clients = flag.String("clients", "1,4,16,64", "client counts for throughput")
	o.perClient = flag.Int("per-client", 40, "throughput: actions per client (at least --min-actions)")
	o.minActions = flag.Int("min-actions", 300, "throughput: fewest actions per level")
	o.soak = flag.Int("soak", 10000, "actions of the memory run")
	o.files = flag.String("files", "1000,10000,100000", "input sizes (files) for scaling")
	o.layers = flag.String("layers", "1,10,100,400", "layer counts for scaling (10,000 files in all)")
	o.passThrough = flag.Bool("pass-through", true, "scaling actions list their input tree as an output directory (measures output upload of untouched inputs)")
	o.serveArgs = flag.String("serve-args", "", "extra space-separated `flags` for serve (e.g. --memory-limit=4294967296)")
	o.quick = flag.Bool("quick", false, "small counts, for checking that everything runs")
	flag.Parse()
	if *o.quick {
		*o.trivialN, *o.clients, *o.perClient, *o.minActions, *o.soak = 30, "1,4", 5, 20, 400
		*o.files, *o.layers = "1000", "1,10"
	}
	return o
}

func run() error {
	o := parseMainFlags()
	sections := map[string]bool{}
	for _, s := range strings.Split(*o.only, ",") {
		sections[strings.TrimSpace(s)] = true
	}
	if err := os.MkdirAll(*o.outDir, 0o755); err != nil {
		return err
	}
	work := *o.workDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "bitzel-bench-"); err != nil {
			return err
		}
		defer fsutil.RemoveAll(work)
	}
	os.Chmod(work, 0o755)

	h := &harness{work: work, passThrough: *o.passThrough, report: &report{label: *o.label}}
	srv, address, err := h.connect(o, work)
	if err != nil {
		return err
	}
	if srv != nil {
		defer srv.stop()
	}
	// An interrupted run leaves neither serve nor its data behind.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		fmt.Fprintln(os.Stderr, "bitzel-bench: interrupted")
		if srv != nil {
			srv.stop()
		}
		if *o.workDir == "" {
			fsutil.RemoveAll(work)
		}
		os.Exit(130)
	}()
	if h.ep, err = dial(address); err != nil {
		return err
	}
	h.bwrap = haveBwrap()
	header := environment(h, address)
	fmt.Fprint(os.Stderr, header)

	// Idle: started, nothing run yet.
	time.Sleep(2 * time.Second)
	h.idleRSS = readRSS(h.pids())
	h.idleGo = goMetrics(h.metrics)
	start := time.Now()
	if err := h.runSections(o, sections, start); err != nil {
		return err
	}
	if sections["memory"] {
		h.endOfRunMemory()
	}
	return h.writeResults(*o.outDir, header, start)
}

// connect starts serve (or, with --remote, watches the given worker)
// and returns the server it started, if any, and the address to drive.
func (h *harness) connect(o *mainOptions, work string) (*server, string, error) {
	if *o.remote != "" {
		h.metrics = *o.metricsAddress
		watched := intList(*o.watch)
		// bitzel-worker's sandbox launcher is its child; count it
		// and the sandboxes as serve's are counted.
		h.pids = func() []int { return withSandboxes(watched...) }
		if h.report.label == "" {
			h.report.label = *o.remote
		}
		return nil, *o.remote, nil
	}
	abs, err := filepath.Abs(*o.binDir)
	if err != nil {
		return nil, "", err
	}
	srv, err := startServer(abs, work, strings.Fields(*o.serveArgs)...)
	if err != nil {
		return nil, "", err
	}
	h.pids = srv.processes
	h.metrics = srv.metrics
	if h.report.label == "" {
		h.report.label = "bitzel-worker serve"
	}
	return srv, srv.address, nil
}

// runSections runs the chosen sections in their order.
func (h *harness) runSections(o *mainOptions, sections map[string]bool, start time.Time) error {
	steps := []struct {
		name string
		run  func() error
	}{
		{"trivial", func() error { return h.trivial(*o.trivialN) }},
		{"throughput", func() error { return h.throughput(intList(*o.clients), *o.perClient, *o.minActions) }},
		{"memory", func() error { return h.memory(*o.soak, max(*o.soak/10, 1)) }},
		{"input", func() error {
			if sections["scaling"] {
				return nil // the 10,000-file point is part of scaling
			}
			return h.treePoint(treeShape{axis: "files", files: 10000, out: "in"}, 3, 5, true)
		}},
		{"scaling", func() error { return h.scaling(intList(*o.files), intList(*o.layers), 10000) }},
		{"bitbake", func() error { return h.bitbake(3, 5) }},
		{"outputs", func() error {
			reps := 2
			if *o.quick {
				reps = 1
			}
			return h.outputs(reps)
		}},
	}
	for _, s := range steps {
		if !sections[s.name] {
			continue
		}
		fmt.Fprintf(os.Stderr, "== %s (%s elapsed)\n", s.name, time.Since(start).Round(time.Second))
		if err := s.run(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// endOfRunMemory adds the memory rows measured after every workload.
func (h *harness) endOfRunMemory() {
	r := readRSS(h.pids())
	if r.total == 0 {
		return
	}
	h.add(row{section: "memory", workload: "RSS", x: "end", metric: "after every workload", unit: "MiB", ours: mib(r.total),
		baseline: "idle after start-up", base: mib(h.idleRSS.total), note: fmt.Sprintf("file-backed %.0f MiB: the mapped CAS", mib(r.file))})
	h.add(row{section: "memory", workload: "anonymous RSS", x: "end", metric: "after every workload", unit: "MiB", ours: mib(r.anon),
		baseline: "idle after start-up", base: mib(h.idleRSS.anon)})
	if g := goMetrics(h.metrics); len(g) > 0 {
		h.add(row{section: "memory", workload: "Go heap goal", x: "end", metric: "after every workload", unit: "MiB",
			ours: g["go_memstats_next_gc_bytes"] / (1 << 20), baseline: "idle after start-up", base: h.idleGo["go_memstats_next_gc_bytes"] / (1 << 20), note: "2x the live heap"})
	}
}

// writeResults prints the report and writes results.md and results.csv.
func (h *harness) writeResults(outDir, header string, start time.Time) error {
	var md bytes.Buffer
	md.WriteString(header)
	fmt.Fprintf(&md, "- total time: %s; load average at the end: %s\n", time.Since(start).Round(time.Second), loadAverage())
	h.report.markdown(&md)
	fmt.Print(md.String())
	if err := os.WriteFile(filepath.Join(outDir, "results.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	if err := h.report.writeCSV(filepath.Join(outDir, "results.csv")); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s and %s\n", filepath.Join(outDir, "results.md"), filepath.Join(outDir, "results.csv"))
	return nil
}

func loadAverage() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func environment(h *harness, address string) string {
	var b strings.Builder
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	// The commit of the tree the harness was built in.
	exe, _ := os.Executable()
	commit, _ := exec.Command("git", "-C", filepath.Dir(exe), "describe", "--always", "--dirty").Output()
	fmt.Fprintf(&b, "## bitzel-bench, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- worker: %s at %s; commit %s\n", h.report.label, address, strings.TrimSpace(string(commit)))
	fmt.Fprintf(&b, "- host: kernel %s, %d CPUs, %s, uid %d; load average at the start: %s\n",
		strings.TrimSpace(string(kernel)), runtime.NumCPU(), runtime.Version(), os.Getuid(), loadAverage())
	fmt.Fprintf(&b, "- ratio = worker / baseline, both measured in this run (below 1: the worker is faster; for actions/s above 1 is better)\n")
	if !h.bwrap {
		fmt.Fprintf(&b, "- bubblewrap baselines skipped: bwrap is not installed or does not run here\n")
	}
	return b.String()
}

// exitSubcommand ends a subcommand as the flag package would: 0 after
// --help, 2 for a bad command line, 1 for a failed run.
func exitSubcommand(name string, err error) {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return
	}
	fmt.Fprintf(os.Stderr, "bitzel-bench %s: %v\n", name, err)
	var usage usageError
	if errors.As(err, &usage) {
		os.Exit(2)
	}
	os.Exit(1)
}

// parseSubcommandFlags parses a subcommand's flags by the convention of
// the project's CLIs: --help prints the usage to stdout (and the caller
// exits 0 on flag.ErrHelp); a bad flag is a usageError of one line.
func parseSubcommandFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(os.Stdout)
		fmt.Fprintf(os.Stdout, "usage: bitzel-bench %s [flags]\n", fs.Name())
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return usageError{err}
	}
	return nil
}
