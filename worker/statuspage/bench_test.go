package statuspage

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkIndexWithAFullRing is the cost of one view of the page with
// 1,000 recent actions (300 rows shown): what a viewer costs the worker
// per refresh. The baseline is one action's recording, the cost every
// action pays whether the page is open or not:
//
//	go test -run XXX -bench . ./worker/statuspage/
func BenchmarkIndexWithAFullRing(b *testing.B) {
	recorder := NewRecorder(DefaultRecentActions)
	cas := newMemoryCAS()
	handler := NewHandler(Options{Recorder: recorder, ContentAddressableStorage: cas, Gatherer: prometheus.DefaultGatherer, Slots: 2, DataDirectory: b.TempDir()})
	now := time.Now()
	record := func(i int) {
		metadata := &remoteexecution.RequestMetadata{ToolInvocationId: "inv", TargetId: fmt.Sprint("//pkg:t", i), ActionMnemonic: "CppCompile"}
		recorder.ActionStarted(testRequest(b, cas.put([]byte("a")), metadata)).ActionCompleted(&remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{
			ExitCode: int32(i % 7 / 6), ExecutionMetadata: metadataTaking(now, time.Millisecond, time.Millisecond, time.Duration(i)*time.Microsecond, time.Millisecond),
		}})
	}
	for i := range DefaultRecentActions {
		record(i)
	}
	view := func() {
		for _, url := range []string{"/status/", "/status/plots/rate.svg", "/status/plots/latency/2"} {
			w := httptest.NewRecorder()
			handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, url, nil))
			if w.Code != http.StatusOK {
				b.Fatalf("GET %s: %d", url, w.Code)
			}
		}
	}
	const samples = 200
	start := time.Now()
	for i := range samples {
		record(i)
	}
	recordCost := time.Since(start) / samples
	// CPU time as well as wall time: on a busy machine the wall time
	// of a view is mostly waiting for a core.
	cpuBefore := processCPUTime(b)
	b.ResetTimer()
	for b.Loop() {
		view()
	}
	b.StopTimer()
	viewCost := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(viewCost)/1e6, "ms/view")
	b.ReportMetric(float64(processCPUTime(b)-cpuBefore)/float64(b.N)/1e6, "cpu-ms/view")
	b.ReportMetric(float64(recordCost)/1e3, "µs/recorded-action")
	b.ReportMetric(float64(viewCost)/float64(recordCost), "x-recorded-action")
}

func processCPUTime(b *testing.B) time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		b.Fatal(err)
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}
