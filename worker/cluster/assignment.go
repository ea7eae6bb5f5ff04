package cluster

import (
	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// assignment is an action the scheduler gave a slot, turned into what
// worker.Executor takes.
type assignment struct {
	request *worker.Request
	// desired is kept for the trace context and for completeResponse.
	desired *remoteworker.DesiredState_Executing
}

// newAssignment resolves the scheduler's instructions against this
// worker's instance name prefix. An error means the assignment can
// never run; it is reported to the client as the action's result.
func newAssignment(instanceNamePatcher digest.InstanceNamePatcher, desired *remoteworker.DesiredState_Executing) (*assignment, error) {
	suffix, err := digest.NewInstanceName(desired.InstanceNameSuffix)
	if err != nil {
		return nil, util.StatusWrapf(err, "Invalid instance name suffix %#v", desired.InstanceNameSuffix)
	}
	instanceName := instanceNamePatcher.PatchInstanceName(suffix)
	// Schedulers predating digest_function leave it UNKNOWN; the hash
	// length then tells SHA-256 from the other classic functions, as
	// bb-storage does for clients that omit it.
	digestFunction, err := instanceName.GetDigestFunction(desired.DigestFunction, len(desired.ActionDigest.GetHash()))
	if err != nil {
		return nil, util.StatusWrapf(err, "Cannot use digest function %s for instance name %#v", desired.DigestFunction, instanceName.String())
	}
	actionDigest, err := digestFunction.NewDigestFromProto(desired.ActionDigest)
	if err != nil {
		return nil, util.StatusWrap(err, "Invalid action digest")
	}
	return &assignment{
		request: &worker.Request{
			InstanceName:   instanceName,
			DigestFunction: digestFunction,
			ActionDigest:   actionDigest,
			Action:         desired.Action,
			// The scheduler looked in the AC before queueing
			// the action, or the client asked it not to. A
			// second lookup here would cost a round trip at
			// best and ignore skip_cache_lookup at worst.
			SkipCacheLookup:   true,
			QueuedTimestamp:   desired.QueuedTimestamp,
			AuxiliaryMetadata: desired.AuxiliaryMetadata,
		},
		desired: desired,
	}, nil
}

// completeResponse makes sure that the ExecutedActionMetadata reported
// to the scheduler carries what the scheduler told us about the action:
// the time it was queued and the auxiliary metadata of the request, as
// bb_worker reports them. The Executor is handed both in the Request
// and is expected to put them there itself (so that an AC entry written
// by a caching decorator carries them too); this only fills in what an
// Executor left out, never duplicating or overwriting what it set.
func (a *assignment) completeResponse(response *remoteexecution.ExecuteResponse) *remoteexecution.ExecuteResponse {
	if response.GetResult() == nil || (a.desired.QueuedTimestamp == nil && len(a.desired.AuxiliaryMetadata) == 0) {
		return response
	}
	metadata := response.Result.GetExecutionMetadata()
	queuedMissing := metadata.GetQueuedTimestamp() == nil && a.desired.QueuedTimestamp != nil
	var auxiliaryMissing []*anypb.Any
	for _, wanted := range a.desired.AuxiliaryMetadata {
		present := false
		for _, have := range metadata.GetAuxiliaryMetadata() {
			if proto.Equal(have, wanted) {
				present = true
				break
			}
		}
		if !present {
			auxiliaryMissing = append(auxiliaryMissing, wanted)
		}
	}
	if !queuedMissing && len(auxiliaryMissing) == 0 {
		return response
	}
	// The Executor may share the message (a cache, a decorator that
	// keeps it); never modify it in place.
	response = proto.Clone(response).(*remoteexecution.ExecuteResponse)
	if response.Result.ExecutionMetadata == nil {
		response.Result.ExecutionMetadata = &remoteexecution.ExecutedActionMetadata{}
	}
	metadata = response.Result.ExecutionMetadata
	if queuedMissing {
		metadata.QueuedTimestamp = a.desired.QueuedTimestamp
	}
	if len(auxiliaryMissing) > 0 {
		metadata.AuxiliaryMetadata = append(auxiliaryMissing, metadata.AuxiliaryMetadata...)
	}
	return response
}
