package worker

import (
	"context"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Executor runs one REAPI action to completion. Both front ends use it:
// the embedded Execution service of `serve` and the Buildbarn
// Synchronize client of `worker`. Failures are reported inside the
// ExecuteResponse (its Status), never as a Go error, so that every
// caller forwards them to the client the same way.
//
// Decorators embed an Executor and override Execute, as Buildbarn's
// BuildExecutor stack does: caching_executor.go (writes cacheable
// results to the AC), metrics_executor.go, logging_executor.go and
// recording_executor.go (the status page). Concurrency is bounded by
// the front ends, which hand an action to the Executor only when a slot
// is free.
type Executor interface {
	Execute(ctx context.Context, request *Request, observer Observer) *remoteexecution.ExecuteResponse
}

// Request names the action to run.
type Request struct {
	// InstanceName is used for every CAS and AC access of the action.
	InstanceName digest.InstanceName
	// DigestFunction is the one the client hashed the action with.
	DigestFunction digest.Function
	// ActionDigest identifies the Action message in the CAS.
	ActionDigest digest.Digest
	// Action may be supplied by the caller when it already holds it
	// (the Buildbarn scheduler sends it inline); nil means fetch it.
	Action *remoteexecution.Action
	// SkipCacheLookup is the client's request not to be served from
	// the AC. The front ends honour it before an action is queued
	// (execution_server.go); nothing after them reads it.
	SkipCacheLookup bool
	// QueuedTimestamp is when the front end queued the action; it goes
	// into ExecutedActionMetadata.queued_timestamp.
	QueuedTimestamp *timestamppb.Timestamp
	// AuxiliaryMetadata from the front end (Buildbarn's scheduler
	// sends some) is reported along with the worker's own.
	AuxiliaryMetadata []*anypb.Any
	// RequestMetadata is what the client attached to its Execute call
	// (nil when it sent none); only the status page uses it.
	RequestMetadata *remoteexecution.RequestMetadata
	// ClientIdentity is the authentication metadata of the client that
	// started the execution (livelogs.ClientIdentity): only it may read
	// the action's live logs.
	ClientIdentity string
}

// Stage is the part of its life an action is in. The values follow
// remoteworker.CurrentState_Executing, so the Buildbarn client can
// report them unchanged.
type Stage int

const (
	StageStarted Stage = iota
	StageFetchingInputs
	StageRunning
	StageUploadingOutputs
	StageCompleted
)

// String returns the stage in the words a log line uses.
func (s Stage) String() string {
	switch s {
	case StageStarted:
		return "started"
	case StageFetchingInputs:
		return "fetching inputs"
	case StageRunning:
		return "running"
	case StageUploadingOutputs:
		return "uploading outputs"
	case StageCompleted:
		return "completed"
	}
	return "unknown"
}

// Observer is told of every stage change. It must not block.
type Observer func(stage Stage)

// NoopObserver ignores stage changes.
func NoopObserver(Stage) {}
