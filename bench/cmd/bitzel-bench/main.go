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
	"flag"
	"fmt"
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
	"github.com/bitzel/bitzel-worker/internal/procfs"
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
	if len(os.Args) > 1 && os.Args[1] == "buildbarn" {
		if err := buildbarnMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bitzel-bench buildbarn:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bitzel-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	binDir := flag.String("bin", "bin", "`directory` holding bitzel-worker and bitzel-sandbox-init")
	outDir := flag.String("out", "bench/out", "`directory` for results.csv and results.md")
	workDir := flag.String("work", "", "scratch `directory` (default: a new one under $TMPDIR); serve's data directory goes there too")
	remote := flag.String("remote", "", "drive this REAPI `host:port` instead of starting serve (e.g. a Buildbarn frontend)")
	label := flag.String("label", "", "name of the worker in the tables (default: bitzel-worker serve, or the --remote address)")
	metricsAddress := flag.String("metrics", "", "with --remote: `host:port` of the worker's Prometheus /metrics (Go heap and goroutines)")
	watch := flag.String("watch-pids", "", "with --remote: comma-separated `pids` whose RSS and CPU are the worker's (e.g. bb_worker,bb_runner)")
	only := flag.String("only", "trivial,throughput,memory,scaling,bitbake,outputs", "sections to run: trivial, throughput, memory, input (the 10,000-file root only), scaling, bitbake, outputs")
	trivialN := flag.Int("trivial", 300, "actions timed for per-action latency")
	clients := flag.String("clients", "1,4,16,64", "client counts for throughput")
	perClient := flag.Int("per-client", 40, "throughput: actions per client (at least --min-actions)")
	minActions := flag.Int("min-actions", 300, "throughput: fewest actions per level")
	soak := flag.Int("soak", 10000, "actions of the memory run")
	files := flag.String("files", "1000,10000,100000", "input sizes (files) for scaling")
	layers := flag.String("layers", "1,10,100,400", "layer counts for scaling (10,000 files in all)")
	passThrough := flag.Bool("pass-through", true, "scaling actions list their input tree as an output directory (measures output upload of untouched inputs)")
	serveArgs := flag.String("serve-args", "", "extra space-separated `flags` for serve (e.g. --memory-limit=4294967296)")
	quick := flag.Bool("quick", false, "small counts, for checking that everything runs")
	flag.Parse()

	if *quick {
		*trivialN, *clients, *perClient, *minActions, *soak = 30, "1,4", 5, 20, 400
		*files, *layers = "1000", "1,10"
	}
	sections := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		sections[strings.TrimSpace(s)] = true
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	work := *workDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "bitzel-bench-"); err != nil {
			return err
		}
		defer fsutil.RemoveAll(work)
	}
	os.Chmod(work, 0o755)

	h := &harness{work: work, passThrough: *passThrough, report: &report{label: *label}}
	var srv *server
	address := *remote
	if address == "" {
		abs, err := filepath.Abs(*binDir)
		if err != nil {
			return err
		}
		if srv, err = startServer(abs, work, strings.Fields(*serveArgs)...); err != nil {
			return err
		}
		defer srv.stop()
		address = srv.address
		h.pids = srv.processes
		h.metrics = srv.metrics
		if h.report.label == "" {
			h.report.label = "bitzel-worker serve"
		}
	} else {
		h.metrics = *metricsAddress
		watched := intList(*watch)
		// bitzel-worker's sandbox launcher is its child; count it as
		// serve's is counted.
		h.pids = func() []int {
			pids := append([]int{}, watched...)
			for _, p := range watched {
				pids = append(pids, procfs.Children(p, "bitzel-sandbox-launcher")...)
			}
			return pids
		}
		if h.report.label == "" {
			h.report.label = *remote
		}
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
		if *workDir == "" {
			fsutil.RemoveAll(work)
		}
		os.Exit(130)
	}()
	var err error
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

	steps := []struct {
		name string
		run  func() error
	}{
		{"trivial", func() error { return h.trivial(*trivialN) }},
		{"throughput", func() error { return h.throughput(intList(*clients), *perClient, *minActions) }},
		{"memory", func() error { return h.memory(*soak, max(*soak/10, 1)) }},
		{"input", func() error {
			if sections["scaling"] {
				return nil // the 10,000-file point is part of scaling
			}
			return h.treePoint(treeShape{axis: "files", files: 10000, out: "in"}, 3, 5, true)
		}},
		{"scaling", func() error { return h.scaling(intList(*files), intList(*layers), 10000) }},
		{"bitbake", func() error { return h.bitbake(3, 5) }},
		{"outputs", func() error {
			reps := 2
			if *quick {
				reps = 1
			}
			return h.outputs(reps)
		}},
	}
	start := time.Now()
	for _, s := range steps {
		if !sections[s.name] {
			continue
		}
		fmt.Fprintf(os.Stderr, "== %s (%s elapsed)\n", s.name, time.Since(start).Round(time.Second))
		if err := s.run(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	if r := readRSS(h.pids()); r.total > 0 && sections["memory"] {
		h.add(row{section: "memory", workload: "RSS", x: "end", metric: "after every workload", unit: "MiB", ours: mib(r.total),
			baseline: "idle after start-up", base: mib(h.idleRSS.total), note: fmt.Sprintf("file-backed %.0f MiB: the mapped CAS", mib(r.file))})
		h.add(row{section: "memory", workload: "anonymous RSS", x: "end", metric: "after every workload", unit: "MiB", ours: mib(r.anon),
			baseline: "idle after start-up", base: mib(h.idleRSS.anon)})
		if g := goMetrics(h.metrics); len(g) > 0 {
			h.add(row{section: "memory", workload: "Go heap goal", x: "end", metric: "after every workload", unit: "MiB",
				ours: g["go_memstats_next_gc_bytes"] / (1 << 20), baseline: "idle after start-up", base: h.idleGo["go_memstats_next_gc_bytes"] / (1 << 20), note: "2x the live heap"})
		}
	}

	var md bytes.Buffer
	md.WriteString(header)
	fmt.Fprintf(&md, "- total time: %s; load average at the end: %s\n", time.Since(start).Round(time.Second), loadAverage())
	h.report.markdown(&md)
	fmt.Print(md.String())
	if err := os.WriteFile(filepath.Join(*outDir, "results.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	if err := h.report.writeCSV(filepath.Join(*outDir, "results.csv")); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s and %s\n", filepath.Join(*outDir, "results.md"), filepath.Join(*outDir, "results.csv"))
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
