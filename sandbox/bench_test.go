package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/internal/procfs"
)

// The sandbox benchmark runs /bin/true through the sandbox and, in the
// same loop, through the baselines the issue names: plain fork/exec,
// unshare(1) with the same namespaces, and bubblewrap. Interleaving
// them makes the ratios robust to the machine's drift; absolute times
// on these machines are not comparable from run to run.
//
//	go test -run XXX -bench Sandbox -benchtime 300x ./sandbox/

// initBinary builds cmd/bitzel-sandbox-init, as a worker installation
// would have it next to bitzel-worker.
func initBinary(b testing.TB, dir string) string {
	if binDir := os.Getenv("BITZEL_BIN_DIR"); binDir != "" {
		return filepath.Join(binDir, InitBinaryName)
	}
	path := filepath.Join(dir, InitBinaryName)
	out, err := exec.Command("go", "build", "-o", path, "../cmd/bitzel-sandbox-init").CombinedOutput()
	if err != nil {
		b.Fatalf("build the init binary: %v\n%s", err, out)
	}
	return path
}

type benchEnv struct {
	b      *testing.B
	base   string
	runner Runner
	n      int
}

func newBenchEnv(b *testing.B, warm int, configure ...func(*Config)) *benchEnv {
	base, err := os.MkdirTemp("", "sandbox-bench-")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(base, 0o755)
	b.Cleanup(func() { fsutil.RemoveAll(base) })
	config := Config{
		StateDir:      filepath.Join(base, "state"),
		InitPath:      initBinary(b, base),
		WarmSandboxes: warm,
		// As the worker names its data directory.
		DataRoots: []string{base},
	}
	for _, c := range configure {
		c(&config)
	}
	runner, err := NewNamespaceRunner(config)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { runner.Close() })
	return &benchEnv{b: b, base: base, runner: runner}
}

func (e *benchEnv) layers(n int) []string {
	layers := make([]string, n)
	for i := range layers {
		layers[i] = filepath.Join(e.base, fmt.Sprintf("layers/l%d", i))
		os.MkdirAll(layers[i], 0o755)
		os.WriteFile(filepath.Join(layers[i], fmt.Sprintf("f%d", i)), []byte("x"), 0o644)
	}
	return layers
}

// runTrue runs /bin/true with fresh upper and work directories, as an
// action would get (their creation is the worker's cost, not counted).
func (e *benchEnv) runTrue(layers []string) time.Duration {
	e.n++
	upper := filepath.Join(e.base, fmt.Sprintf("u%d", e.n))
	work := filepath.Join(e.base, fmt.Sprintf("w%d", e.n))
	os.Mkdir(upper, 0o755)
	os.Mkdir(work, 0o755)
	start := time.Now()
	result, err := e.runner.Run(context.Background(), &Spec{
		Mounts: []Mount{{Layers: layers, UpperDir: upper, WorkDir: work}},
		Argv:   []string{"/bin/true"},
	})
	elapsed := time.Since(start)
	if err != nil || result.ExitCode != 0 {
		e.b.Fatalf("sandbox: %v %+v", err, result)
	}
	fsutil.RemoveAll(upper)
	fsutil.RemoveAll(work)
	return elapsed
}

func timeCommand(b *testing.B, argv ...string) time.Duration {
	start := time.Now()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		b.Fatalf("%v: %v\n%s", argv, err, out)
	}
	return time.Since(start)
}

func BenchmarkSandbox(b *testing.B) {
	if _, err := exec.LookPath("bwrap"); err != nil {
		b.Fatal("bubblewrap is the baseline: install Debian's bubblewrap")
	}
	for _, warm := range []int{2, 0} {
		for _, n := range []int{1, 50} {
			b.Run(fmt.Sprintf("warm=%d/layers=%d", warm, n), func(b *testing.B) {
				e := newBenchEnv(b, warm)
				one, many := e.layers(1), e.layers(n)
				var sandbox, sandboxOne, forkExec, unshare, bwrap time.Duration
				// Let the warm pool fill, and warm the caches.
				e.runTrue(many)
				time.Sleep(50 * time.Millisecond)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					sandbox += e.runTrue(many)
					if n != 1 {
						sandboxOne += e.runTrue(one)
					}
					forkExec += timeCommand(b, "/bin/true")
					unshare += timeCommand(b, "unshare", "-Urmpnf", "--mount-proc", "true")
					bwrap += timeCommand(b, "bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true")
				}
				b.StopTimer()
				perOp := func(d time.Duration) float64 { return float64(d) / float64(b.N) }
				b.ReportMetric(perOp(sandbox)/1e6, "sandbox-ms")
				b.ReportMetric(perOp(bwrap)/1e6, "bwrap-ms")
				b.ReportMetric(float64(sandbox)/float64(bwrap), "x-bwrap")
				b.ReportMetric(float64(sandbox)/float64(unshare), "x-unshare")
				b.ReportMetric(float64(sandbox)/float64(forkExec), "x-forkexec")
				if n != 1 {
					b.ReportMetric(float64(sandbox)/float64(sandboxOne), "x-1layer")
				}
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// compareRunners runs /bin/true through two runners, interleaved and
// each in turn first, and reports each one's wall time and CPU per run
// (its launcher's own and that of the sandboxes it reaped), with the
// ratios second / first.
func compareRunners(b *testing.B, firstName string, first *benchEnv, secondName string, second *benchEnv) {
	// Each its own, in its data directory.
	firstLayers, secondLayers := first.layers(1), second.layers(1)
	first.runTrue(firstLayers)
	firstLaunchers := procfs.Children(os.Getpid(), "bitzel-sandbox-launcher")
	second.runTrue(secondLayers)
	var secondLauncher int
	for _, pid := range procfs.Children(os.Getpid(), "bitzel-sandbox-launcher") {
		if !slices.Contains(firstLaunchers, pid) {
			secondLauncher = pid
		}
	}
	if len(firstLaunchers) != 1 || secondLauncher == 0 {
		b.Fatalf("launchers %v then %d: want one per runner", firstLaunchers, secondLauncher)
	}
	firstLauncher := firstLaunchers[0]
	cpuBefore := map[int]time.Duration{firstLauncher: sandboxesCPU(firstLauncher), secondLauncher: sandboxesCPU(secondLauncher)}
	var firstTime, secondTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			firstTime += first.runTrue(firstLayers)
			secondTime += second.runTrue(secondLayers)
		} else {
			secondTime += second.runTrue(secondLayers)
			firstTime += first.runTrue(firstLayers)
		}
	}
	b.StopTimer()
	// Let the last actions be released.
	time.Sleep(100 * time.Millisecond)
	firstCPU := sandboxesCPU(firstLauncher) - cpuBefore[firstLauncher]
	secondCPU := sandboxesCPU(secondLauncher) - cpuBefore[secondLauncher]
	perOp := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
	b.ReportMetric(perOp(firstTime), firstName+"-ms")
	b.ReportMetric(perOp(secondTime), secondName+"-ms")
	b.ReportMetric(float64(secondTime)/float64(firstTime), "x-"+firstName)
	b.ReportMetric(perOp(firstCPU), firstName+"-cpu-ms")
	b.ReportMetric(perOp(secondCPU), secondName+"-cpu-ms")
	b.ReportMetric(float64(secondCPU)/float64(firstCPU), "x-"+firstName+"-cpu")
	b.ReportMetric(0, "ns/op")
}

// sandboxesCPU is the CPU time of a launcher, of its sandboxes' PID 1s
// (alive: each serves many actions) and of what they reaped. A PID 1
// that exits lands in the launcher's reaped time, so a difference of
// two readings counts it once.
func sandboxesCPU(launcher int) time.Duration {
	var total time.Duration
	for _, pid := range append([]int{launcher}, procfs.Children(launcher, InitBinaryName)...) {
		if cpu, err := procfs.CPUTime(pid); err == nil {
			total += cpu
		}
	}
	return total
}

// BenchmarkSandboxAgainstBaseline runs /bin/true through two runners
// alike but for their init binary (the launcher and PID 1): this tree's
// and the one in BITZEL_BASELINE_BIN_DIR (the commit before a change;
// it must speak the same sandbox protocol), with compareRunners. The
// end-to-end figures cannot see a change of a few percent of PID 1
// through their noise; this can.
//
//	git stash; go build -o /tmp/base/ ./cmd/bitzel-sandbox-init; git stash pop
//	BITZEL_BASELINE_BIN_DIR=/tmp/base go test -run XXX -bench SandboxAgainstBaseline -benchtime 1000x ./sandbox/
func BenchmarkSandboxAgainstBaseline(b *testing.B) {
	baseDir := os.Getenv("BITZEL_BASELINE_BIN_DIR")
	if baseDir == "" {
		b.Skip("set BITZEL_BASELINE_BIN_DIR to a folder holding the baseline's bitzel-sandbox-init")
	}
	baseInit := filepath.Join(baseDir, InitBinaryName)
	if _, err := os.Stat(baseInit); err != nil {
		b.Fatal(err)
	}
	// The baseline first: the ratios read head / base.
	base := newBenchEnv(b, 0, func(c *Config) { c.InitPath = baseInit })
	compareRunners(b, "base", base, "head", newBenchEnv(b, 0))
}
