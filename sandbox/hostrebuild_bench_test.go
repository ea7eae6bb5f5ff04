package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/internal/procfs"
	"golang.org/x/sys/unix"
)

// BenchmarkHostTreeWithSubmounts measures what rebuilding a host tree
// entry by entry costs (child/hostrebuild.go): the host's /etc, bound
// twice under a temporary directory, once as it is and once with files
// bound over its hosts, hostname and resolv.conf as Docker does, each
// added to the default host paths of a runner of its own. The runners
// are used in turn in one loop. CPU is each launcher's, which includes
// the PID 1s it reaped (where the rebuild runs). As root: it mounts.
//
//	go test -run XXX -bench HostTreeWithSubmounts -benchtime 300x ./sandbox/
func BenchmarkHostTreeWithSubmounts(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root: it mounts")
	}
	// Not under /tmp, which the sandbox mounts on its own.
	base, err := os.MkdirTemp("/var/tmp", "host-tree-bench-")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(base, 0o755)
	b.Cleanup(func() { os.RemoveAll(base) })
	bind := func(source, target string) {
		if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	}
	plain, mounted := filepath.Join(base, "plain"), filepath.Join(base, "mounted")
	for _, d := range []string{plain, mounted} {
		os.Mkdir(d, 0o755)
		bind("/etc", d)
	}
	entries, _ := os.ReadDir("/etc")
	for _, name := range []string{"hosts", "hostname", "resolv.conf"} {
		source := filepath.Join(base, name)
		os.WriteFile(source, []byte("x\n"), 0o644)
		target := filepath.Join(mounted, name)
		if info, err := os.Stat(target); err != nil || !info.Mode().IsRegular() {
			b.Fatalf("/etc/%s is no regular file here: %v", name, err)
		}
		bind(source, target)
	}
	for _, warm := range []int{2, 0} {
		b.Run(fmt.Sprintf("warm=%d", warm), func(b *testing.B) {
			launcher := map[*benchEnv]int{}
			var layers []string
			start := func(tree string) *benchEnv {
				known := procfs.Children(os.Getpid(), "bitzel-sandbox-launcher")
				e := newBenchEnv(b, warm, func(c *Config) {
					c.HostPaths = append(slices.Clone(DefaultHostPaths), tree)
				})
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
			overlaid, rebuilt := start(plain), start(mounted)
			time.Sleep(50 * time.Millisecond)
			cpuBefore := map[*benchEnv]time.Duration{}
			for e, pid := range launcher {
				cpuBefore[e] = sandboxesCPU(pid)
			}
			var overlaidTime, rebuiltTime time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				overlaidTime += overlaid.runTrue(layers)
				rebuiltTime += rebuilt.runTrue(layers)
			}
			b.StopTimer()
			time.Sleep(100 * time.Millisecond)
			cpu := func(e *benchEnv) time.Duration { return sandboxesCPU(launcher[e]) - cpuBefore[e] }
			perOp := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
			b.ReportMetric(float64(len(entries)), "etc-entries")
			b.ReportMetric(perOp(overlaidTime), "overlaid-ms")
			b.ReportMetric(perOp(rebuiltTime), "rebuilt-ms")
			b.ReportMetric(float64(rebuiltTime)/float64(overlaidTime), "x-overlaid")
			b.ReportMetric(perOp(cpu(overlaid)), "overlaid-cpu-ms")
			b.ReportMetric(perOp(cpu(rebuilt)), "rebuilt-cpu-ms")
			b.ReportMetric(float64(cpu(rebuilt))/float64(cpu(overlaid)), "x-overlaid-cpu")
			b.ReportMetric(0, "ns/op")
		})
	}
}
