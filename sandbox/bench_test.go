package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
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

func newBenchEnv(b *testing.B, warm int) *benchEnv {
	base, err := os.MkdirTemp("", "sandbox-bench-")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(base, 0o755)
	b.Cleanup(func() { RemoveAll(base) })
	runner, err := NewNamespaceRunner(Config{
		StateDir:      filepath.Join(base, "state"),
		InitPath:      initBinary(b, base),
		WarmSandboxes: warm,
	})
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
	RemoveAll(upper)
	RemoveAll(work)
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
