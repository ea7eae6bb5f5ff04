package main

import (
	"fmt"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// actionTiming is what one Execute call took as the client saw it, and
// the worker's own account of it (ExecutedActionMetadata), so that a
// side's latency splits into the worker's stages and what lies outside
// the worker (the scheduler, the storage, the client's round trips).
type actionTiming struct {
	// start is when the client sent Execute; the worker's timestamps
	// come from the same machine's clock.
	start    time.Time
	latency  time.Duration
	metadata *remoteexecution.ExecutedActionMetadata
}

// stageMedians are the medians of a run's actions, stage by stage.
type stageMedians struct {
	latency, queued, fetch, execution, upload, worker, outside time.Duration
	// outside splits into the way in (Execute sent to queued) and the
	// way back (the worker's completion to the client's answer: the
	// Action Cache write, the completing report, the scheduler and the
	// storage passing the result on).
	toQueue, back time.Duration
}

func (s stageMedians) String() string {
	return fmt.Sprintf("latency %.2f ms = queued %.2f + worker %.2f (fetch %.2f, execution %.2f, upload %.2f) + outside %.2f (in %.2f, back %.2f)",
		ms(s.latency), ms(s.queued), ms(s.worker), ms(s.fetch), ms(s.execution), ms(s.upload), ms(s.outside), ms(s.toQueue), ms(s.back))
}

func between(from, to *timestamppb.Timestamp) time.Duration {
	if from == nil || to == nil {
		return 0
	}
	return to.AsTime().Sub(from.AsTime())
}

// medianStages takes each stage's median on its own: the medians need
// not add up to the latency's, and "outside" is the median of each
// action's latency less its time from queueing to the worker's
// completion.
func medianStages(timings []actionTiming) stageMedians {
	var latency, queued, fetch, execution, upload, worker, outside, toQueue, back []time.Duration
	for _, t := range timings {
		m := t.metadata
		latency = append(latency, t.latency)
		if m == nil {
			continue
		}
		queued = append(queued, between(m.QueuedTimestamp, m.WorkerStartTimestamp))
		fetch = append(fetch, between(m.InputFetchStartTimestamp, m.InputFetchCompletedTimestamp))
		execution = append(execution, between(m.ExecutionStartTimestamp, m.ExecutionCompletedTimestamp))
		upload = append(upload, between(m.OutputUploadStartTimestamp, m.OutputUploadCompletedTimestamp))
		worker = append(worker, between(m.WorkerStartTimestamp, m.WorkerCompletedTimestamp))
		outside = append(outside, t.latency-between(m.QueuedTimestamp, m.WorkerCompletedTimestamp))
		if !t.start.IsZero() && m.QueuedTimestamp != nil && m.WorkerCompletedTimestamp != nil {
			toQueue = append(toQueue, m.QueuedTimestamp.AsTime().Sub(t.start))
			back = append(back, t.start.Add(t.latency).Sub(m.WorkerCompletedTimestamp.AsTime()))
		}
	}
	return stageMedians{median(latency), median(queued), median(fetch), median(execution), median(upload), median(worker), median(outside), median(toQueue), median(back)}
}
