package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/internal/procfs"
)

// BenchmarkSandboxIsolation measures what the isolation of issue 10
// costs: /bin/true with the default seccomp filter against the same
// runner with the filter off, and, when BITZEL_BASELINE_BIN_DIR holds a
// bitzel-sandbox-init built from before that work (host trees bound,
// no filter, layers named by path), against that init too. The
// runners are used in turn in one loop, so the ratios are same-run.
//
//	BITZEL_BIN_DIR=$PWD/bin BITZEL_BASELINE_BIN_DIR=/tmp/old-bin \
//	  go test -run XXX -bench SandboxIsolation -benchtime 300x ./sandbox/
func BenchmarkSandboxIsolation(b *testing.B) {
	baselineDir := os.Getenv("BITZEL_BASELINE_BIN_DIR")
	for _, warm := range []int{2, 0} {
		b.Run(fmt.Sprintf("warm=%d", warm), func(b *testing.B) {
			// Each runner's launcher is the one that appears
			// when it starts: its CPU time includes the PID 1s it
			// reaped, which wall time on a loaded machine hides.
			launcher := map[*benchEnv]int{}
			var layers []string
			start := func(configure func(*Config)) *benchEnv {
				known := procfs.Children(os.Getpid(), "bitzel-sandbox-launcher")
				e := newBenchEnv(b, warm, configure)
				if layers == nil {
					layers = e.layers(1)
				}
				e.runTrue(layers)
				for _, pid := range procfs.Children(os.Getpid(), "bitzel-sandbox-launcher") {
					if !slices.Contains(known, pid) {
						launcher[e] = pid
					}
				}
				return e
			}
			filtered := start(func(*Config) {})
			unfiltered := start(func(c *Config) { c.Seccomp = SeccompOff })
			var before *benchEnv
			if baselineDir != "" {
				before = start(func(c *Config) { c.InitPath = filepath.Join(baselineDir, InitBinaryName) })
			}
			time.Sleep(50 * time.Millisecond)
			cpuBefore := map[*benchEnv]time.Duration{}
			for e, pid := range launcher {
				cpuBefore[e] = sandboxesCPU(pid)
			}
			var on, off, old time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				on += filtered.runTrue(layers)
				off += unfiltered.runTrue(layers)
				if before != nil {
					old += before.runTrue(layers)
				}
			}
			b.StopTimer()
			time.Sleep(100 * time.Millisecond)
			cpu := func(e *benchEnv) time.Duration {
				pid, ok := launcher[e]
				if !ok {
					b.Fatal("no launcher found for a runner")
				}
				return sandboxesCPU(pid) - cpuBefore[e]
			}
			perOp := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
			b.ReportMetric(perOp(cpu(filtered)), "seccomp-cpu-ms")
			b.ReportMetric(float64(cpu(filtered))/float64(cpu(unfiltered)), "x-no-seccomp-cpu")
			if before != nil {
				b.ReportMetric(float64(cpu(filtered))/float64(cpu(before)), "x-before-cpu")
			}
			b.ReportMetric(perOp(on), "seccomp-ms")
			b.ReportMetric(perOp(off), "no-seccomp-ms")
			b.ReportMetric(float64(on)/float64(off), "x-no-seccomp")
			if before != nil {
				b.ReportMetric(perOp(old), "before-ms")
				b.ReportMetric(float64(on)/float64(old), "x-before")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}
