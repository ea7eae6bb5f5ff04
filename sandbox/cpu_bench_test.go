package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/sandbox/child"
)

// BenchmarkSandboxCPU reports the CPU time a trivial action's sandbox
// costs, the figure that bounds a worker's throughput once every core
// is busy: /bin/true through the sandbox (a runner as the worker has
// it, PID 1s kept between actions), against the same command by
// fork/exec, bubblewrap and unshare(1) with the sandbox's namespaces,
// in alternating blocks. CPU is counted in a cgroup the benchmark moves
// itself into, so every process it starts (the launcher, each PID 1,
// bwrap, every /bin/true) and nothing else on the machine is counted;
// the kernel workers that free namespaces after an action are not
// (they are the same on every side but fork/exec). As root, with a
// cgroup v2 hierarchy mounted (cpu.stat exists in every v2 group,
// controllers or not).
//
//	go test -run XXX -bench SandboxCPU -benchtime 600x ./sandbox/
func BenchmarkSandboxCPU(b *testing.B) {
	usage := ownCPUCgroup(b)
	e := newBenchEnv(b, 2)
	layers := e.layers(1)
	e.runTrue(layers)
	sides := []struct {
		name string
		run  func()
	}{
		{"sandbox", func() { e.runTrue(layers) }},
		{"forkexec", func() { timeCommand(b, "/bin/true") }},
		{"bwrap", func() {
			timeCommand(b, "bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "true")
		}},
		{"unshare", func() { timeCommand(b, "unshare", "-Urmpnfi", "--mount-proc", "true") }},
	}
	const block = 25
	cpu := make([]time.Duration, len(sides))
	wall := make([]time.Duration, len(sides))
	b.ResetTimer()
	for done := 0; done < b.N; done += block {
		for i, side := range sides {
			if only := os.Getenv("ONLY"); only != "" && only != side.name {
				continue
			}
			before, start := usage(), time.Now()
			for range block {
				side.run()
			}
			wall[i] += time.Since(start)
			cpu[i] += usage() - before
		}
	}
	b.StopTimer()
	n := float64((b.N + block - 1) / block * block)
	for i, side := range sides {
		b.ReportMetric(float64(cpu[i])/n/1e6, side.name+"-cpu-ms")
		b.ReportMetric(float64(wall[i])/n/1e6, side.name+"-ms")
	}
	b.ReportMetric(float64(cpu[0])/float64(cpu[2]), "x-bwrap-cpu")
	b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "x-forkexec-cpu")
	b.ReportMetric(float64(cpu[0]-cpu[1])/float64(cpu[2]-cpu[1]), "x-bwrap-over-forkexec-cpu")
	b.ReportMetric(0, "ns/op")
}

// ownCPUCgroup moves the benchmark into a new cgroup v2 group and
// returns a reader of the CPU time of everything in it since then
// (cpu.stat usage_usec). The benchmark moves back and removes the
// group at the end.
func ownCPUCgroup(b *testing.B) func() time.Duration {
	mounts, own, err := readSelfCgroups()
	if err != nil || mounts["cgroup2"] == "" {
		b.Fatalf("needs a cgroup v2 hierarchy to count the CPU of the benchmark's processes: %v", err)
	}
	home := filepath.Join(mounts["cgroup2"], own[""])
	dir := filepath.Join(mounts["cgroup2"], fmt.Sprintf("bitzel-bench-cpu-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatalf("needs root and a cgroup v2 hierarchy: %v", err)
	}
	pid := strconv.Itoa(os.Getpid())
	if err := child.WriteFileDirect(filepath.Join(dir, "cgroup.procs"), []byte(pid)); err != nil {
		os.Remove(dir)
		b.Fatal(err)
	}
	b.Cleanup(func() {
		// After the runner's Cleanup (registered later, run first):
		// only this process is left in the group.
		child.WriteFileDirect(filepath.Join(home, "cgroup.procs"), []byte(pid))
		if err := os.Remove(dir); err != nil {
			b.Errorf("remove the benchmark's cgroup: %v", err)
		}
	})
	return func() time.Duration {
		data, err := child.ReadFileDirect(filepath.Join(dir, "cpu.stat"))
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if value, ok := strings.CutPrefix(line, "usage_usec "); ok {
				usec, _ := strconv.ParseInt(value, 10, 64)
				return time.Duration(usec) * time.Microsecond
			}
		}
		b.Fatal("cpu.stat has no usage_usec")
		return 0
	}
}
