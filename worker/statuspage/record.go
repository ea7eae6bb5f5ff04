package statuspage

import (
	"maps"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// maximumOutputsKept bounds the outputs a record keeps, so that an
// action with thousands of outputs (a BitBake do_install) does not make
// the ring's memory depend on what actions produce.
const maximumOutputsKept = 100

// maximumLayersKept bounds the input layers a record keeps, for the
// same reason: a mount may stack hundreds of lowerdirs.
const maximumLayersKept = 100

// Record is what the page knows of one action. Fields other than
// stage and stageSince never change once the action has completed.
type Record struct {
	ID              uint64
	InstanceName    digest.InstanceName
	DigestFunction  digest.Function
	ActionDigest    digest.Digest
	RequestMetadata *remoteexecution.RequestMetadata
	Started         time.Time
	Completed       time.Time

	// Set while running, under the recorder's lock.
	stage      worker.Stage
	stageSince time.Time

	// Layers are the input root's layers once placed (at most
	// maximumLayersKept of LayerCount), with whether each was cached
	// or built by this action. Set under the recorder's lock.
	Layers     []layers.LayerUse
	LayerCount int

	// Set on completion.
	Done           bool
	Cached         bool
	Code           codes.Code
	Message        string
	ExitCode       int32
	Stdout, Stderr *remoteexecution.Digest
	Metadata       *remoteexecution.ExecutedActionMetadata
	// OOMKilled and TimedOut are what the worker's resource usage
	// in Metadata says of the run.
	OOMKilled, TimedOut bool
	Outputs             []string
	OutputCount         int
}

// Outcome classes the filter offers.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
	OutcomeCached    = "cached"
	OutcomeTimeout   = "timeout"
	OutcomeOOM       = "oom"
	OutcomeError     = "error"
	OutcomeRunning   = "running"
)

// Outcome names how the action ended, most specific first.
func (r *Record) Outcome() string {
	switch {
	case !r.Done:
		return OutcomeRunning
	case r.OOMKilled:
		return OutcomeOOM
	case r.Code == codes.DeadlineExceeded || r.TimedOut:
		return OutcomeTimeout
	case r.Code != codes.OK:
		return OutcomeError
	case r.ExitCode != 0:
		return OutcomeFailed
	case r.Cached:
		return OutcomeCached
	}
	return OutcomeSucceeded
}

// Failed reports whether the client saw anything but success.
func (r *Record) Failed() bool {
	switch r.Outcome() {
	case OutcomeSucceeded, OutcomeCached, OutcomeRunning:
		return false
	}
	return true
}

// Duration is the time the action took, from the point it was queued
// when that is known.
func (r *Record) Duration(now time.Time) time.Duration {
	start := r.Started
	if q := r.Metadata.GetQueuedTimestamp(); q.IsValid() && q != nil && q.AsTime().Before(start) {
		start = q.AsTime()
	}
	end := now
	if r.Done {
		end = r.Completed
	}
	return end.Sub(start)
}

func newRecord(id uint64, request *worker.Request, now time.Time) *Record {
	return &Record{
		ID:              id,
		InstanceName:    request.InstanceName,
		DigestFunction:  request.DigestFunction,
		ActionDigest:    request.ActionDigest,
		RequestMetadata: request.ClientRequestMetadata(),
		Started:         now,
		stage:           worker.StageStarted,
		stageSince:      now,
	}
}

// complete copies what the page shows out of the response, leaving the
// response (and its possibly long output lists) to the garbage
// collector.
func (r *Record) complete(response *remoteexecution.ExecuteResponse, now time.Time) {
	r.Done = true
	r.Completed = now
	r.Cached = response.CachedResult
	st := status.FromProto(response.Status)
	r.Code, r.Message = st.Code(), st.Message()
	if r.Message == "" {
		r.Message = response.Message
	}
	result := response.Result
	if result == nil {
		return
	}
	r.ExitCode = result.ExitCode
	r.Stdout, r.Stderr = result.StdoutDigest, result.StderrDigest
	r.Metadata = result.ExecutionMetadata
	// Only the two fields the outcome needs: the rest is decoded when
	// a page shows it (Usage), not at every action's completion.
	aux := r.Metadata.GetAuxiliaryMetadata()
	r.OOMKilled = structBool(aux, "oom_killed")
	r.TimedOut = structBool(aux, "timed_out")
	add := func(p string) {
		r.OutputCount++
		if len(r.Outputs) < maximumOutputsKept {
			r.Outputs = append(r.Outputs, p)
		}
	}
	for _, f := range result.OutputFiles {
		add(f.Path)
	}
	for _, d := range result.OutputDirectories {
		add(d.Path + "/")
	}
	for _, s := range result.OutputSymlinks {
		add(s.Path + " -> " + s.Target)
	}
	for _, s := range result.OutputFileSymlinks {
		add(s.Path + " -> " + s.Target)
	}
	for _, s := range result.OutputDirectorySymlinks {
		add(s.Path + "/ -> " + s.Target)
	}
}

func structBool(aux []*anypb.Any, name string) bool {
	v, ok := worker.StructMetadataField(aux, name)
	return ok && v.GetBoolValue()
}

// Usage is the worker's Struct metadata of the action as the page
// lists it: the fields of every Struct in Metadata (resource usage,
// and why the result was not cached when it was not), later ones
// winning.
func (r *Record) Usage() map[string]any {
	var usage map[string]any
	for _, a := range r.Metadata.GetAuxiliaryMetadata() {
		var s structpb.Struct
		if a.MessageIs(&s) && a.UnmarshalTo(&s) == nil {
			if usage == nil {
				usage = map[string]any{}
			}
			maps.Copy(usage, s.AsMap())
		}
	}
	return usage
}
