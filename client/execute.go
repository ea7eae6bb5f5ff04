package client

import (
	"context"
	"fmt"
	"io"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/status"
)

// Execute runs an uploaded action to completion, reporting its stages,
// and returns the ExecuteResponse. A failed action is a response with
// a non-zero exit code; an error means the action could not be run
// (its Status), or the RPC failed.
func (r *Remote) Execute(ctx context.Context, action digest.Digest, skipCacheLookup bool, progress Progress) (*remoteexecution.ExecuteResponse, error) {
	return r.execute(ctx, action, skipCacheLookup, progress, func(*remoteexecution.ExecuteOperationMetadata) {})
}

// execute is Execute, passing every operation's metadata to observe.
func (r *Remote) execute(ctx context.Context, action digest.Digest, skipCacheLookup bool, progress Progress, observe func(*remoteexecution.ExecuteOperationMetadata)) (*remoteexecution.ExecuteResponse, error) {
	stream, err := r.execution.Execute(ctx, &remoteexecution.ExecuteRequest{
		InstanceName:    r.instanceName,
		ActionDigest:    action.GetProto(),
		SkipCacheLookup: skipCacheLookup,
		DigestFunction:  r.function.GetEnumValue(),
	})
	if err != nil {
		return nil, fmt.Errorf("execute: %w", err)
	}
	last := remoteexecution.ExecutionStage_UNKNOWN
	for {
		op, err := stream.Recv()
		if err == io.EOF {
			return nil, fmt.Errorf("execute: the stream ended before the action completed")
		} else if err != nil {
			return nil, fmt.Errorf("execute: %w", err)
		}
		metadata := &remoteexecution.ExecuteOperationMetadata{}
		if op.Metadata != nil && op.Metadata.UnmarshalTo(metadata) == nil {
			if metadata.Stage != last {
				last = metadata.Stage
				progress.Stage(last)
			}
			observe(metadata)
		}
		if !op.Done {
			continue
		}
		if opErr := op.GetError(); opErr != nil {
			return nil, fmt.Errorf("execute: %w", status.FromProto(opErr).Err())
		}
		response := &remoteexecution.ExecuteResponse{}
		if err := op.GetResponse().UnmarshalTo(response); err != nil {
			return nil, fmt.Errorf("execute: operation %s has no ExecuteResponse: %w", op.Name, err)
		}
		return response, nil
	}
}
