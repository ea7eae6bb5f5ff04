package cluster

import (
	"context"
	"log/slog"
	"sync"

	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/buildbarn/bb-storage/pkg/otel"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// execution is one action running on a slot's behalf in its own
// goroutine. The slot polls it for the latest state rather than
// receiving every stage, so a slow scheduler never holds up the
// Executor (whose Observer must not block): stages that pass while a
// Synchronize call is in flight are coalesced into the newest one.
type execution struct {
	actionDigest *remoteexecution.Digest
	cancel       context.CancelFunc
	// changed holds a token whenever the state moved on since the
	// slot last looked.
	changed chan struct{}
	// done is closed once Execute has returned.
	done chan struct{}

	lock     sync.Mutex
	stage    worker.Stage
	response *remoteexecution.ExecuteResponse
}

// startExecution runs the assignment on executor. The context given to
// Execute is not derived from the slot's: shutting the worker down
// drains (lets the action finish); only the scheduler, through cancel,
// abandons an action.
func startExecution(executor worker.Executor, a *assignment, logger *slog.Logger) *execution {
	ctx, cancel := context.WithCancel(otel.NewContextWithW3CTraceContext(context.Background(), a.desired.W3CTraceContext))
	e := &execution{
		actionDigest: a.desired.ActionDigest,
		cancel:       cancel,
		changed:      make(chan struct{}, 1),
		done:         make(chan struct{}),
		stage:        worker.StageStarted,
	}
	go func() {
		defer close(e.done)
		response := e.execute(ctx, executor, a, logger)
		e.lock.Lock()
		e.response = a.completeResponse(response)
		e.lock.Unlock()
		e.signal()
	}()
	return e
}

func (e *execution) execute(ctx context.Context, executor worker.Executor, a *assignment, logger *slog.Logger) (response *remoteexecution.ExecuteResponse) {
	// A panicking Executor is a bug, but it must cost one action, not
	// every action of every slot of this worker.
	defer func() {
		if r := recover(); r != nil {
			logger.Error("Executor panicked", "action", a.request.ActionDigest.String(), "panic", r)
			response = &remoteexecution.ExecuteResponse{
				Status: status.Newf(codes.Internal, "Executor panicked: %v", r).Proto(),
			}
		}
	}()
	response = executor.Execute(ctx, a.request, e.observe)
	if response == nil {
		response = &remoteexecution.ExecuteResponse{
			Status: status.New(codes.Internal, "Executor returned no response").Proto(),
		}
	}
	return response
}

// observe is the worker.Observer handed to the Executor.
func (e *execution) observe(stage worker.Stage) {
	if stage < worker.StageStarted || stage >= worker.StageCompleted {
		// Completion is reported with the response, once
		// Execute has returned it.
		return
	}
	e.lock.Lock()
	changed := e.stage != stage && e.response == nil
	if changed {
		e.stage = stage
	}
	e.lock.Unlock()
	if changed {
		e.signal()
	}
}

func (e *execution) signal() {
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// completed tells whether Execute has returned its response.
func (e *execution) completed() bool {
	e.lock.Lock()
	defer e.lock.Unlock()
	return e.response != nil
}

// currentState returns what to tell the scheduler about the action
// now, and whether it has completed.
func (e *execution) currentState() (*remoteworker.CurrentState_Executing, bool) {
	e.lock.Lock()
	defer e.lock.Unlock()
	state := &remoteworker.CurrentState_Executing{ActionDigest: e.actionDigest}
	if e.response != nil {
		state.ExecutionState = &remoteworker.CurrentState_Executing_Completed{Completed: e.response}
		return state, true
	}
	switch e.stage {
	case worker.StageFetchingInputs:
		state.ExecutionState = &remoteworker.CurrentState_Executing_FetchingInputs{FetchingInputs: &emptypb.Empty{}}
	case worker.StageRunning:
		state.ExecutionState = &remoteworker.CurrentState_Executing_Running{Running: &emptypb.Empty{}}
	case worker.StageUploadingOutputs:
		state.ExecutionState = &remoteworker.CurrentState_Executing_UploadingOutputs{UploadingOutputs: &emptypb.Empty{}}
	default:
		state.ExecutionState = &remoteworker.CurrentState_Executing_Started{Started: &emptypb.Empty{}}
	}
	return state, false
}

// abandon cancels the action and returns once Execute has returned.
// Its result is dropped: the scheduler no longer wants it.
func (e *execution) abandon() {
	e.cancel()
	<-e.done
}

// release frees the context of an execution that completed.
func (e *execution) release() {
	e.cancel()
}
