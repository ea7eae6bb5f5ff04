package client

import (
	"context"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/genproto/googleapis/longrunning"
)

// Execute runs an uploaded action to completion, reporting its stages,
// and returns the ExecuteResponse. A failed action is a response with
// a non-zero exit code; an error means the action could not be run
// (its Status), or the RPC failed.
func (r *Remote) Execute(ctx context.Context, action digest.Digest, skipCacheLookup bool, progress Progress) (*remoteexecution.ExecuteResponse, error) {
	return r.ExecuteObserving(ctx, action, skipCacheLookup, progress, nil)
}

// ExecuteObserving is Execute, passing every operation the server
// sends to observe (when not nil) as it arrives.
func (r *Remote) ExecuteObserving(ctx context.Context, action digest.Digest, skipCacheLookup bool, progress Progress, observe func(*longrunning.Operation)) (*remoteexecution.ExecuteResponse, error) {
	stream, err := r.StartExecute(ctx, action, skipCacheLookup)
	if err != nil {
		return nil, err
	}
	return r.follow(stream, progress, observe)
}

// StartExecute sends the Execute request and returns its stream, for a
// caller that reads it itself (with Await and Follow): one that waits
// for a stage, or drops the stream and resumes with WaitExecution.
func (r *Remote) StartExecute(ctx context.Context, action digest.Digest, skipCacheLookup bool) (remoteexecution.Execution_ExecuteClient, error) {
	stream, err := r.execution.Execute(ctx, &remoteexecution.ExecuteRequest{
		InstanceName:    r.instanceName,
		ActionDigest:    action.GetProto(),
		SkipCacheLookup: skipCacheLookup,
		DigestFunction:  r.function.GetEnumValue(),
	})
	if err != nil {
		return nil, util.StatusWrapf(err, "execute %s", action)
	}
	return stream, nil
}

// WaitExecution follows an operation by name, as Execute does from its
// start: after a dropped Execute stream, or from another connection.
func (r *Remote) WaitExecution(ctx context.Context, name string, progress Progress, observe func(*longrunning.Operation)) (*remoteexecution.ExecuteResponse, error) {
	stream, err := r.StartWaitExecution(ctx, name)
	if err != nil {
		return nil, err
	}
	return r.follow(stream, progress, observe)
}

// StartWaitExecution sends the WaitExecution request and returns its
// stream.
func (r *Remote) StartWaitExecution(ctx context.Context, name string) (remoteexecution.Execution_WaitExecutionClient, error) {
	stream, err := r.execution.WaitExecution(ctx, &remoteexecution.WaitExecutionRequest{Name: name})
	if err != nil {
		return nil, util.StatusWrapf(err, "wait for operation %q", name)
	}
	return stream, nil
}

// follow is Follow, telling progress each new stage.
func (r *Remote) follow(stream OperationStream, progress Progress, observe func(*longrunning.Operation)) (*remoteexecution.ExecuteResponse, error) {
	last := remoteexecution.ExecutionStage_UNKNOWN
	response, err := Follow(stream, func(op *longrunning.Operation) {
		if metadata := Metadata(op); metadata != nil && metadata.Stage != last {
			last = metadata.Stage
			if progress != nil {
				progress.Stage(last)
			}
		}
		if observe != nil {
			observe(op)
		}
	})
	if err != nil {
		return nil, util.StatusWrap(err, "execute")
	}
	return response, nil
}
