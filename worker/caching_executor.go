package worker

import (
	"context"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type cachingExecutor struct {
	Executor
	storage *storage.Storage
}

// NewCachingExecutor writes the ActionResult of every successful,
// cacheable action to the Action Cache, as Buildbarn's
// CachingBuildExecutor does: exit code 0, an OK status and no
// do_not_cache. A non-zero exit is a result, but not one to serve
// again. Looking results up is the front end's business (the embedded
// Execution service or bb_scheduler), before an action takes a slot.
func NewCachingExecutor(base Executor, storage *storage.Storage) Executor {
	return &cachingExecutor{Executor: base, storage: storage}
}

func (e *cachingExecutor) Execute(ctx context.Context, request *Request, observer Observer) *remoteexecution.ExecuteResponse {
	if request.Action == nil {
		// Fetched once here and handed down, rather than by both.
		action, err := fetchMessage(ctx, e.storage, request.ActionDigest, &remoteexecution.Action{})
		if err != nil {
			observer(StageStarted)
			return &remoteexecution.ExecuteResponse{Status: status.Convert(util.StatusWrap(err, "Failed to obtain the action")).Proto()}
		}
		copied := *request
		copied.Action = action
		request = &copied
	}
	response := e.Executor.Execute(ctx, request, observer)
	if status.FromProto(response.Status).Code() != codes.OK || response.Result == nil ||
		response.Result.ExitCode != 0 || request.Action.DoNotCache {
		return response
	}
	if _, limited := notCachedReason(response.Result); limited {
		// An exit 0 after a limit kill: see limit_events.go.
		return response
	}
	err := e.storage.ActionCache.Put(ctx, request.ActionDigest, buffer.NewProtoBufferFromProto(response.Result, buffer.UserProvided))
	if err != nil {
		// The action ran and its outputs are in the CAS: report it
		// with the failure to cache it, as Buildbarn does.
		response.Status = status.Convert(util.StatusWrap(err, "Failed to store the action result in the Action Cache")).Proto()
	}
	return response
}
