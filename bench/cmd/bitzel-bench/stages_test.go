package main

import (
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestMedianStagesSplitsTheTimeOutsideTheWorker(t *testing.T) {
	start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	at := func(ms float64) *timestamppb.Timestamp {
		return timestamppb.New(start.Add(time.Duration(ms * float64(time.Millisecond))))
	}
	// Sent at 0, queued at 1, the worker from 1.5 to 7.5 (fetch 0.5,
	// execution 4, upload 0.5), the answer at 10.
	timing := actionTiming{start: start, latency: 10 * time.Millisecond, metadata: &remoteexecution.ExecutedActionMetadata{
		QueuedTimestamp:                at(1),
		WorkerStartTimestamp:           at(1.5),
		InputFetchStartTimestamp:       at(1.5),
		InputFetchCompletedTimestamp:   at(2),
		ExecutionStartTimestamp:        at(2),
		ExecutionCompletedTimestamp:    at(6),
		OutputUploadStartTimestamp:     at(6),
		OutputUploadCompletedTimestamp: at(6.5),
		WorkerCompletedTimestamp:       at(7.5),
	}}
	got := medianStages([]actionTiming{timing})
	want := stageMedians{
		latency: 10 * time.Millisecond, queued: 500 * time.Microsecond, fetch: 500 * time.Microsecond,
		execution: 4 * time.Millisecond, upload: 500 * time.Microsecond, worker: 6 * time.Millisecond,
		outside: 3500 * time.Microsecond, toQueue: time.Millisecond, back: 2500 * time.Microsecond,
	}
	if got != want {
		t.Errorf("medianStages = %+v, want %+v", got, want)
	}
	// Without the client's start time the split is unknown, not zero
	// by accident of arithmetic on a zero time.
	timing.start = time.Time{}
	if got := medianStages([]actionTiming{timing}); got.toQueue != 0 || got.back != 0 || got.outside != want.outside {
		t.Errorf("without a start: %+v", got)
	}
}
