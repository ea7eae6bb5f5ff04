package sandbox

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/sandbox/child"
	"golang.org/x/sys/unix"
)

// BenchmarkActionCgroupV1 compares an action's v1 cgroups kept and
// reused (cgroup_v1_recycle.go) against a memory and a pids group
// created and removed per action, interleaved, as root. Each op is one
// action's cgroup life with a real process charged to it: Create, Join
// a /bin/true, wait for it, Stats, Remove. Besides wall time it reports
// the whole machine's busy CPU per op (/proc/stat), which includes the
// kernel workers that free removed groups.
//
//	go test -run XXX -bench ActionCgroupV1 -benchtime 500x ./sandbox/
func BenchmarkActionCgroupV1(b *testing.B) {
	newManager := func(name string) *cgroupV1 {
		manager, err := DetectCgroups(CgroupsV1, name)
		if err != nil {
			b.Fatalf("needs root and the v1 hierarchies: %v", err)
		}
		b.Cleanup(func() { manager.Close() })
		return manager.(*cgroupV1)
	}
	reused, fresh := newManager("bitzel-bench-reused"), newManager("bitzel-bench-fresh")
	fresh.idle.close()
	limits := Limits{MemoryBytes: 1 << 30, MaxProcesses: 4096}
	one := func(m *cgroupV1) {
		c, err := m.Create("action", limits)
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command("/bin/sh", "-c", "read x")
		stdin, _ := cmd.StdinPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if err := c.Join(cmd.Process.Pid); err != nil {
			b.Fatal(err)
		}
		stdin.Close()
		cmd.Wait()
		c.Stats()
		if err := c.Remove(); err != nil {
			b.Fatal(err)
		}
	}
	const block = 50
	var wall [2]time.Duration
	var busy [2]float64
	b.ResetTimer()
	for done := 0; done < b.N; done += block {
		for side, m := range []*cgroupV1{reused, fresh} {
			busy0, start := machineBusySeconds(b), time.Now()
			for i := 0; i < block; i++ {
				one(m)
			}
			wall[side] += time.Since(start)
			busy[side] += machineBusySeconds(b) - busy0
		}
	}
	b.StopTimer()
	n := float64((b.N + block - 1) / block * block)
	b.ReportMetric(float64(wall[0])/n/1e6, "reused-ms")
	b.ReportMetric(float64(wall[1])/n/1e6, "fresh-ms")
	b.ReportMetric(float64(wall[0])/float64(wall[1]), "x-fresh")
	b.ReportMetric(busy[0]/n*1e3, "reused-busy-ms")
	b.ReportMetric(busy[1]/n*1e3, "fresh-busy-ms")
	b.ReportMetric(busy[0]/busy[1], "x-fresh-busy")
	b.ReportMetric(0, "ns/op")
}

// machineBusySeconds is the CPU time of every CPU not idle or waiting
// for I/O since boot, from /proc/stat.
func machineBusySeconds(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	fields := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
	var ticks float64
	for i, f := range fields[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseFloat(f, 64)
		ticks += n
	}
	return ticks / 100 // USER_HZ
}

// BenchmarkCgroupFileRead reads one cgroupfs file through os.ReadFile
// and through readFileRaw (the way the cgroup code reads them), in
// alternating blocks, and reports their CPU per read (this process's
// user and system time).
//
//	go test -run XXX -bench CgroupFileRead -benchtime 20000x ./sandbox/
func BenchmarkCgroupFileRead(b *testing.B) {
	var path string
	for _, candidate := range []string{"/sys/fs/cgroup/memory/memory.usage_in_bytes", "/sys/fs/cgroup/unified/cgroup.controllers", "/sys/fs/cgroup/cgroup.controllers"} {
		if _, err := child.ReadFileDirect(candidate); err == nil {
			path = candidate
			break
		}
	}
	if path == "" {
		b.Skip("no cgroupfs mounted: no v1 memory or v2 hierarchy under /sys/fs/cgroup")
	}
	processCPU := func() time.Duration {
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	reads := []func() error{
		func() error { _, err := os.ReadFile(path); return err },
		func() error { _, err := child.ReadFileDirect(path); return err },
	}
	var cpu [2]time.Duration
	const block = 100
	b.ResetTimer()
	for done := 0; done < b.N; done += block {
		for i, read := range reads {
			start := processCPU()
			for j := 0; j < block; j++ {
				if err := read(); err != nil {
					b.Fatal(err)
				}
			}
			cpu[i] += processCPU() - start
		}
	}
	b.StopTimer()
	n := float64((b.N + block - 1) / block * block)
	b.ReportMetric(float64(cpu[0].Nanoseconds())/n/1e3, "os-us")
	b.ReportMetric(float64(cpu[1].Nanoseconds())/n/1e3, "raw-us")
	b.ReportMetric(float64(cpu[1])/float64(cpu[0]), "x-os")
	b.ReportMetric(0, "ns/op")
}
