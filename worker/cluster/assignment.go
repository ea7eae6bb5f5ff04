package cluster

import (
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/bitzel/bitzel-worker/worker/remoteworker"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// assignment is an action the scheduler gave a slot, turned into what
// worker.Executor takes, plus what the Executor cannot take yet.
type assignment struct {
	request *worker.Request
	// desired is kept for the fields worker.Request has no room for;
	// see completeResponse.
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
			SkipCacheLookup: true,
		},
		desired: desired,
	}, nil
}

// completeResponse adds what the scheduler told us about the action to
// the ExecutedActionMetadata that the Executor produced: the time it was
// queued and the auxiliary metadata of the request, as bb_worker does.
//
// This belongs inside the Executor stack (so that an AC entry written
// by a caching decorator carries it too), but worker.Request has no
// fields for it yet. Until it has, the Buildbarn client patches the
// response it reports, leaving untouched anything the Executor set.
func (a *assignment) completeResponse(response *remoteexecution.ExecuteResponse) *remoteexecution.ExecuteResponse {
	if response.GetResult() == nil || (a.desired.QueuedTimestamp == nil && len(a.desired.AuxiliaryMetadata) == 0) {
		return response
	}
	// The Executor may share the message (a cache, a decorator that
	// keeps it); never modify it in place.
	response = proto.Clone(response).(*remoteexecution.ExecuteResponse)
	if response.Result.ExecutionMetadata == nil {
		response.Result.ExecutionMetadata = &remoteexecution.ExecutedActionMetadata{}
	}
	metadata := response.Result.ExecutionMetadata
	if metadata.QueuedTimestamp == nil {
		metadata.QueuedTimestamp = a.desired.QueuedTimestamp
	}
	if len(a.desired.AuxiliaryMetadata) > 0 {
		metadata.AuxiliaryMetadata = append(append([]*anypb.Any(nil), a.desired.AuxiliaryMetadata...), metadata.AuxiliaryMetadata...)
	}
	return response
}
