package worker

import (
	"context"
	"fmt"
	"log"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type loggingExecutor struct {
	Executor
	logger *log.Logger
}

// NewLoggingExecutor logs one line per action: its digest, outcome
// and the time each stage took, which is what a person watching a
// worker needs to find slow or failing actions.
func NewLoggingExecutor(base Executor, logger *log.Logger) Executor {
	return &loggingExecutor{Executor: base, logger: logger}
}

func (e *loggingExecutor) Execute(ctx context.Context, request *Request, observer Observer) *remoteexecution.ExecuteResponse {
	response := e.Executor.Execute(ctx, request, observer)
	outcome := "exit 0"
	if st := status.FromProto(response.Status); st.Code() != codes.OK {
		outcome = fmt.Sprintf("%s: %s", st.Code(), st.Message())
	} else if code := response.Result.GetExitCode(); code != 0 {
		outcome = fmt.Sprintf("exit %d", code)
	}
	if response.Message != "" {
		// What the worker knows about why the action ended so:
		// limits hit, an environment without PATH, ...
		outcome += " (" + response.Message + ")"
	}
	m := response.Result.GetExecutionMetadata()
	e.logger.Printf("action %s/%d %s: %s; fetch %s, run %s, upload %s, total %s",
		request.ActionDigest.GetHashString(), request.ActionDigest.GetSizeBytes(),
		instanceLabel(request), outcome,
		stageDuration(m.GetInputFetchStartTimestamp(), m.GetInputFetchCompletedTimestamp()),
		stageDuration(m.GetExecutionStartTimestamp(), m.GetExecutionCompletedTimestamp()),
		stageDuration(m.GetOutputUploadStartTimestamp(), m.GetOutputUploadCompletedTimestamp()),
		stageDuration(m.GetWorkerStartTimestamp(), m.GetWorkerCompletedTimestamp()))
	return response
}

func instanceLabel(request *Request) string {
	if name := request.InstanceName.String(); name != "" {
		return "(" + name + ")"
	}
	return ""
}

type timestamp interface {
	IsValid() bool
	AsTime() time.Time
}

func stageDuration(start, end timestamp) string {
	if start == nil || end == nil || !start.IsValid() || !end.IsValid() {
		return "-"
	}
	return end.AsTime().Sub(start.AsTime()).Round(100 * time.Microsecond).String()
}
