package statuspage

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/worker"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestRingKeepsTheNewestAndDoesNotGrowOver10000Actions(t *testing.T) {
	const size, actions = 1000, 10_000
	recorder := NewRecorder(size)
	cas := newMemoryCAS()
	request := testRequest(t, cas.put([]byte("action")), nil)
	// Every action has many outputs: what a record keeps of them is
	// bounded too.
	result := &remoteexecution.ActionResult{ExecutionMetadata: metadataTaking(time.Now(), 0, time.Millisecond, time.Millisecond, time.Millisecond)}
	for i := range 5 * maximumOutputsKept {
		result.OutputFiles = append(result.OutputFiles, &remoteexecution.OutputFile{Path: fmt.Sprint("out/", i)})
	}
	var heapAfterFirstRing uint64
	for i := 1; i <= actions; i++ {
		recording := recorder.ActionStarted(request)
		recording.StageChanged(worker.StageRunning)
		recording.ActionCompleted(&remoteexecution.ExecuteResponse{Result: result})
		if i == 2*size {
			heapAfterFirstRing = heapInUse()
		}
	}
	if got := len(recorder.recent.records); got != size {
		t.Fatalf("the ring's backing array holds %d records, want %d", got, size)
	}
	if len(recorder.running) != 0 {
		t.Fatalf("%d completed actions are still listed as running", len(recorder.running))
	}
	snapshot := recorder.Snapshot()
	if len(snapshot.Recent) != size {
		t.Fatalf("%d recent actions, want %d", len(snapshot.Recent), size)
	}
	if first, last := snapshot.Recent[0].ID, snapshot.Recent[size-1].ID; first != actions || last != actions-size+1 {
		t.Fatalf("recent actions are %d..%d, want %d..%d newest first", first, last, actions, actions-size+1)
	}
	if _, ok := recorder.Lookup(actions - size); ok {
		t.Error("an action older than the ring is still found")
	}
	if r, ok := recorder.Lookup(actions); !ok || len(r.Outputs) != maximumOutputsKept || r.OutputCount != 5*maximumOutputsKept {
		t.Errorf("newest action: found %v, %d outputs kept of %d; want %d of %d", ok, len(r.Outputs), r.OutputCount, maximumOutputsKept, 5*maximumOutputsKept)
	}
	// Memory: the 8,000 actions after the ring filled twice over add
	// nothing that stays. Some slack for the allocator's own
	// bookkeeping; a leak of even 100 bytes per action would be 800 kB.
	if grown := int64(heapInUse()) - int64(heapAfterFirstRing); grown > 400<<10 {
		t.Errorf("the heap grew by %d bytes over %d actions once the ring was full", grown, actions-2*size)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestOutcomesAreClassifiedMostSpecificFirst(t *testing.T) {
	for _, c := range []struct {
		record Record
		want   string
	}{
		{Record{}, OutcomeRunning},
		{Record{Done: true}, OutcomeSucceeded},
		{Record{Done: true, Cached: true}, OutcomeCached},
		{Record{Done: true, ExitCode: 2}, OutcomeFailed},
		{Record{Done: true, Code: 9}, OutcomeError},
		{Record{Done: true, Code: 4, ExitCode: 137}, OutcomeTimeout},
		{Record{Done: true, ExitCode: 137, OOMKilled: true}, OutcomeOOM},
		{Record{Done: true, Code: 0, TimedOut: true}, OutcomeTimeout},
	} {
		if got := c.record.Outcome(); got != c.want {
			t.Errorf("%+v: outcome %q, want %q", c.record, got, c.want)
		}
	}
}

// An action the kernel OOM-killed is an OOM on the page even though
// its result was not cached for that reason: the worker then adds a
// second Struct (why not cached) after the resource usage, and both
// show.
func TestAnOOMKilledActionShowsAsOOMWithItsWholeUsage(t *testing.T) {
	recorder := NewRecorder(10)
	cas := newMemoryCAS()
	request := testRequest(t, cas.put([]byte("action")), nil)
	usage, _ := structpb.NewStruct(map[string]any{"oom_killed": true, "timed_out": false, "peak_rss_bytes": float64(1 << 20)})
	notCached, _ := structpb.NewStruct(map[string]any{"not_cached_because": "the kernel killed a process of the action"})
	metadata := metadataTaking(time.Now(), 0, time.Millisecond, time.Millisecond, time.Millisecond)
	for _, s := range []*structpb.Struct{usage, notCached} {
		a, _ := anypb.New(s)
		metadata.AuxiliaryMetadata = append(metadata.AuxiliaryMetadata, a)
	}
	recorder.ActionStarted(request).ActionCompleted(&remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{ExitCode: 137, ExecutionMetadata: metadata}})
	record, ok := recorder.Lookup(1)
	if !ok {
		t.Fatal("the action is not recorded")
	}
	if got := record.Outcome(); got != OutcomeOOM {
		t.Errorf("outcome %q, want %q", got, OutcomeOOM)
	}
	if u := record.Usage(); u["peak_rss_bytes"] != float64(1<<20) || u["not_cached_because"] == nil {
		t.Errorf("usage %v lacks the resource usage or the reason", u)
	}
}

func TestSeriesCountsPerIntervalAndForgetsPastTheHour(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	recorder := newRecorderWithClock(10, clock.Now)
	cas := newMemoryCAS()
	request := testRequest(t, cas.put([]byte("a")), nil)
	complete := func(run time.Duration) {
		result := &remoteexecution.ActionResult{ExecutionMetadata: metadataTaking(clock.Now(), 0, time.Millisecond, run, time.Millisecond)}
		recorder.ActionStarted(request).ActionCompleted(&remoteexecution.ExecuteResponse{Result: result})
	}
	for i := range 100 {
		complete(time.Duration(i+1) * 10 * time.Millisecond)
	}
	clock.advance(intervalLength)
	complete(time.Second)
	intervals := recorder.Series()
	if len(intervals) != intervalCount {
		t.Fatalf("%d intervals, want %d", len(intervals), intervalCount)
	}
	last, previous := intervals[intervalCount-1], intervals[intervalCount-2]
	if last.Completed != 1 || previous.Completed != 100 {
		t.Fatalf("last two intervals counted %d and %d actions, want 100 and 1", previous.Completed, last.Completed)
	}
	// Execution took 10 ms to 1 s: p50 is about 500 ms, p99 about
	// 990 ms, within one bucket (19%).
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}} {
		got, ok := previous.Percentile(2, c.p)
		if !ok || got < c.want || float64(got) > 1.2*float64(c.want) {
			t.Errorf("execution p%v = %v (known %v), want %v to +20%%", 100*c.p, got, ok, c.want)
		}
	}
	if _, ok := previous.Percentile(0, 0.5); !ok {
		t.Error("the queued stage was not counted")
	}
	clock.advance(2 * time.Hour)
	for _, iv := range recorder.Series() {
		if iv.Completed != 0 {
			t.Fatalf("an interval of more than an hour ago is still shown: %+v", iv.Start)
		}
	}
}
