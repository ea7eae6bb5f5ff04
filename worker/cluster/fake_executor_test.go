package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/worker"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeExecutor hands every Execute call to the test, which then plays
// the action: it reports stages and finishes it when it chooses. An
// action that is never finished runs until its context is cancelled.
type fakeExecutor struct {
	calls chan *executeCall
	// ended is closed at the end of a test, so that actions the test
	// left running return and the client can drain.
	ended   chan struct{}
	endOnce sync.Once
}

type executeCall struct {
	ctx      context.Context
	request  *worker.Request
	stages   chan worker.Stage
	finish   chan *remoteexecution.ExecuteResponse
	panicked chan any
	returned chan struct{}
	// ctxErr is ctx.Err() when Execute returned; read after returned
	// is closed.
	ctxErr error
}

func newFakeExecutor() *fakeExecutor {
	return &fakeExecutor{calls: make(chan *executeCall, 16), ended: make(chan struct{})}
}

func (e *fakeExecutor) endAll() {
	e.endOnce.Do(func() { close(e.ended) })
}

func (e *fakeExecutor) Execute(ctx context.Context, request *worker.Request, observer worker.Observer) *remoteexecution.ExecuteResponse {
	call := &executeCall{
		ctx:      ctx,
		request:  request,
		stages:   make(chan worker.Stage),
		finish:   make(chan *remoteexecution.ExecuteResponse),
		panicked: make(chan any),
		returned: make(chan struct{}),
	}
	defer close(call.returned)
	select {
	case e.calls <- call:
	case <-e.ended:
		return okResponse(0)
	}
	for {
		select {
		case stage := <-call.stages:
			observer(stage)
		case response := <-call.finish:
			call.ctxErr = ctx.Err()
			return response
		case value := <-call.panicked:
			panic(value)
		case <-e.ended:
			return okResponse(0)
		case <-ctx.Done():
			call.ctxErr = ctx.Err()
			return &remoteexecution.ExecuteResponse{Status: status.FromContextError(ctx.Err()).Proto()}
		}
	}
}

// nextCall returns the next Execute call.
func (e *fakeExecutor) nextCall(t *testing.T) *executeCall {
	t.Helper()
	select {
	case call := <-e.calls:
		return call
	case <-time.After(realTimeLimit):
		t.Fatal("Execute was not called")
		return nil
	}
}

// expectNoCall checks that Execute has not been called so far.
func (e *fakeExecutor) expectNoCall(t *testing.T) {
	t.Helper()
	select {
	case call := <-e.calls:
		t.Fatalf("Execute was called for %s", call.request.ActionDigest)
	default:
	}
}

func (c *executeCall) report(t *testing.T, stage worker.Stage) {
	t.Helper()
	select {
	case c.stages <- stage:
	case <-c.returned:
		t.Fatalf("action returned before reporting %s", stage)
	}
}

func (c *executeCall) complete(t *testing.T, response *remoteexecution.ExecuteResponse) {
	t.Helper()
	select {
	case c.finish <- response:
	case <-c.returned:
		t.Fatal("action returned before it was finished")
	}
	c.waitReturned(t)
}

func (c *executeCall) panic(t *testing.T, value any) {
	t.Helper()
	select {
	case c.panicked <- value:
	case <-c.returned:
		t.Fatal("action returned before it could panic")
	}
	c.waitReturned(t)
}

func (c *executeCall) waitReturned(t *testing.T) {
	t.Helper()
	select {
	case <-c.returned:
	case <-time.After(realTimeLimit):
		t.Fatal("Execute did not return")
	}
}

func okResponse(exitCode int32) *remoteexecution.ExecuteResponse {
	return &remoteexecution.ExecuteResponse{
		Status: status.New(codes.OK, "").Proto(),
		Result: &remoteexecution.ActionResult{
			ExitCode:          exitCode,
			ExecutionMetadata: &remoteexecution.ExecutedActionMetadata{Worker: "fake"},
		},
	}
}
