package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/internal/procfs"
	"github.com/bitzel/bitzel-worker/internal/testsupport"
)

// The end-to-end benchmarks drive `serve` the way Bazel does and put
// each figure next to the same command run by plain fork/exec in the
// same run:
//
//	go test -run XXX -bench . -benchtime 400x ./e2e/

// uniqueTrueActions uploads n distinct /bin/true actions, so none is a
// cache hit or merged with another.
func uniqueTrueActions(c *client, n int) []*remoteexecution.Digest {
	input := c.tree(map[string]entry{})
	digests := make([]*remoteexecution.Digest, n)
	for i := range digests {
		digests[i] = c.newAction(action{args: []string{"/bin/true"}, env: map[string]string{"RUN": fmt.Sprint(i, time.Now().UnixNano())}, input: input})
	}
	return digests
}

func executeOnce(b *testing.B, c *client, d *remoteexecution.Digest) {
	response, err := c.tryExecute(context.Background(), d, false)
	if err != nil {
		b.Fatal(err)
	}
	if response.Status.GetCode() != 0 || response.Result.GetExitCode() != 0 || response.CachedResult {
		b.Fatalf("action: %v", response)
	}
}

// serverCPU is the CPU time the server, its sandbox launcher, the
// sandboxes' PID 1s and what they reaped have used:
// utime+stime+cutime+cstime of /proc/PID/stat for each (alive, so none
// is yet in its parent's cutime; a PID 1 that retires lands in the
// launcher's).
func serverCPU(b *testing.B, s *server) time.Duration {
	var total time.Duration
	for _, pid := range append([]int{s.cmd.Process.Pid}, sandboxProcesses(b, s.cmd.Process.Pid)...) {
		if cpu, err := procfs.CPUTime(pid); err == nil {
			total += cpu
		}
	}
	return total
}

func forkExecTrue(b *testing.B) {
	if err := exec.Command("/bin/true").Run(); err != nil {
		b.Fatal(err)
	}
}

func percentile(durations []time.Duration, p float64) time.Duration {
	sorted := append([]time.Duration{}, durations...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	return sorted[int(float64(len(sorted)-1)*p)]
}

func BenchmarkTrivialActionLatency(b *testing.B) {
	s := startServer(b)
	c := s.client()
	digests := uniqueTrueActions(c, b.N+10)
	for _, d := range digests[:10] {
		executeOnce(b, c, d) // warm up caches and the sandbox pool
	}
	time.Sleep(100 * time.Millisecond)
	latencies := make([]time.Duration, b.N)
	baseline := make([]time.Duration, b.N)
	cpuBefore := serverCPU(b, s)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		executeOnce(b, c, digests[10+i])
		latencies[i] = time.Since(start)
		start = time.Now()
		forkExecTrue(b)
		baseline[i] = time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(serverCPU(b, s)-cpuBefore)/float64(b.N)/1e6, "server-cpu-ms/action")
	median, baseMedian := percentile(latencies, 0.5), percentile(baseline, 0.5)
	b.ReportMetric(float64(median)/1e6, "median-ms")
	b.ReportMetric(float64(percentile(latencies, 0.9))/1e6, "p90-ms")
	b.ReportMetric(float64(baseMedian)/1e6, "forkexec-median-ms")
	b.ReportMetric(float64(median)/float64(baseMedian), "x-forkexec")
	b.ReportMetric(0, "ns/op")
}

func BenchmarkThroughput16Clients(b *testing.B) {
	const clients = 16
	s := startServer(b)
	c := s.client()
	n := b.N
	if n < clients {
		n = clients
	}
	digests := uniqueTrueActions(c, n+10)
	for _, d := range digests[:10] {
		executeOnce(b, c, d)
	}
	time.Sleep(100 * time.Millisecond)
	run := func(do func(i int)) time.Duration {
		elapsed, _ := testsupport.Concurrently(clients, n, func(i int) error { do(i); return nil }, nil)
		return elapsed
	}
	cpuBefore := serverCPU(b, s)
	b.ResetTimer()
	elapsed := run(func(i int) { executeOnce(b, c, digests[10+i]) })
	b.ReportMetric(float64(serverCPU(b, s)-cpuBefore)/float64(n)/1e6, "server-cpu-ms/action")
	baseline := run(func(int) { forkExecTrue(b) })
	b.StopTimer()
	rate := float64(n) / elapsed.Seconds()
	baseRate := float64(n) / baseline.Seconds()
	b.ReportMetric(rate, "actions/s")
	b.ReportMetric(baseRate, "forkexec/s")
	b.ReportMetric(rate/baseRate, "x-forkexec")
	b.ReportMetric(0, "ns/op")
}
