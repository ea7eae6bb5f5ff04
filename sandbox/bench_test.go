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

// BenchmarkSharedUserNamespace compares the two ways the launcher
// starts sandboxes (child/launcher.go): a user namespace per sandbox,
// which makes Go fork the launcher, against one shared user namespace
// (the mode with a pids cgroup), which lets it vfork. Without a warm
// pool, so the launch is on the critical path; interleaved. CPU is the
// launcher's and the sandboxes' it reaped, per run. Needs root and v1
// cgroups (or a delegated v2) for the shared mode.
//
//	go test -run XXX -bench SharedUserNamespace -benchtime 300x ./sandbox/
func BenchmarkSharedUserNamespace(b *testing.B) {
	manager, err := DetectCgroups(CgroupsAuto, "bitzel-bench")
	if err != nil {
		b.Fatalf("the shared mode needs cgroups: %v", err)
	}
	own := newBenchEnv(b, 0)
	shared := newBenchEnv(b, 0, func(c *Config) { c.Cgroups = manager })
	layers := own.layers(1)
	own.runTrue(layers)
	launchers := procfs.Children(os.Getpid(), "bitzel-sandbox-launcher")
	shared.runTrue(layers)
	var sharedLauncher int
	for _, pid := range procfs.Children(os.Getpid(), "bitzel-sandbox-launcher") {
		if !slices.Contains(launchers, pid) {
			sharedLauncher = pid
		}
	}
	if len(launchers) != 1 || sharedLauncher == 0 {
		b.Fatalf("launchers %v then %d: want one per runner", launchers, sharedLauncher)
	}
	ownLauncher := launchers[0]
	cpuBefore := map[int]time.Duration{ownLauncher: processCPU(b, ownLauncher), sharedLauncher: processCPU(b, sharedLauncher)}
	var ownTime, sharedTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ownTime += own.runTrue(layers)
		sharedTime += shared.runTrue(layers)
	}
	b.StopTimer()
	// Let the last PID 1s be reaped into their launcher's counters.
	time.Sleep(100 * time.Millisecond)
	ownCPU := processCPU(b, ownLauncher) - cpuBefore[ownLauncher]
	sharedCPU := processCPU(b, sharedLauncher) - cpuBefore[sharedLauncher]
	perOp := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
	b.ReportMetric(perOp(ownTime), "own-ms")
	b.ReportMetric(perOp(sharedTime), "shared-ms")
	b.ReportMetric(float64(sharedTime)/float64(ownTime), "x-own")
	b.ReportMetric(perOp(ownCPU), "own-cpu-ms")
	b.ReportMetric(perOp(sharedCPU), "shared-cpu-ms")
	b.ReportMetric(float64(sharedCPU)/float64(ownCPU), "x-own-cpu")
	b.ReportMetric(0, "ns/op")
}

func processCPU(b *testing.B, pid int) time.Duration {
	cpu, err := procfs.CPUTime(pid)
	if err != nil {
		b.Fatal(err)
	}
	return cpu
}

// BenchmarkSandboxAgainstBaseline runs /bin/true through two runners
// alike but for their init binary (the launcher and PID 1): this tree's
// and the one in BITZEL_BASELINE_BIN_DIR (the commit before a change),
// interleaved, each in turn first. CPU is each launcher's own and its
// reaped sandboxes', per run; the end-to-end figures cannot see a
// change of a few percent of PID 1 through their noise, this can.
// Without a warm pool, so that every sandbox is reaped by the end.
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
	head := newBenchEnv(b, 0)
	layers := head.layers(1)
	head.runTrue(layers)
	headLaunchers := procfs.Children(os.Getpid(), "bitzel-sandbox-launcher")
	base := newBenchEnv(b, 0, func(c *Config) { c.InitPath = baseInit })
	base.runTrue(layers)
	var baseLauncher int
	for _, pid := range procfs.Children(os.Getpid(), "bitzel-sandbox-launcher") {
		if !slices.Contains(headLaunchers, pid) {
			baseLauncher = pid
		}
	}
	if len(headLaunchers) != 1 || baseLauncher == 0 {
		b.Fatalf("launchers %v then %d: want one per runner", headLaunchers, baseLauncher)
	}
	headLauncher := headLaunchers[0]
	cpuBefore := map[int]time.Duration{headLauncher: processCPU(b, headLauncher), baseLauncher: processCPU(b, baseLauncher)}
	var headTime, baseTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			headTime += head.runTrue(layers)
			baseTime += base.runTrue(layers)
		} else {
			baseTime += base.runTrue(layers)
			headTime += head.runTrue(layers)
		}
	}
	b.StopTimer()
	// Let the last PID 1s be reaped into their launcher's counters.
	time.Sleep(100 * time.Millisecond)
	headCPU := processCPU(b, headLauncher) - cpuBefore[headLauncher]
	baseCPU := processCPU(b, baseLauncher) - cpuBefore[baseLauncher]
	perOp := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
	b.ReportMetric(perOp(headTime), "head-ms")
	b.ReportMetric(perOp(baseTime), "base-ms")
	b.ReportMetric(float64(headTime)/float64(baseTime), "x-base")
	b.ReportMetric(perOp(headCPU), "head-cpu-ms")
	b.ReportMetric(perOp(baseCPU), "base-cpu-ms")
	b.ReportMetric(float64(headCPU)/float64(baseCPU), "x-base-cpu")
	b.ReportMetric(0, "ns/op")
}
