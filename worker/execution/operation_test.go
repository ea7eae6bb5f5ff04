package execution

import (
	"context"
	"errors"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/genproto/googleapis/longrunning"
)

// An operation's stream sends its state now and at every change, stops
// when it is done or the client leaves, and ignores stages after
// completion.
func TestOperationStreamsEveryChangeUntilDone(t *testing.T) {
	op := newOperation("op", digestOfBytes([]byte("a")))
	sent := make(chan *longrunning.Operation, 10)
	done := make(chan error, 1)
	go func() {
		done <- op.stream(context.Background(), func(o *longrunning.Operation) error { sent <- o; return nil })
	}()
	next := func() *longrunning.Operation {
		t.Helper()
		select {
		case o := <-sent:
			return o
		case <-time.After(10 * time.Second):
			t.Fatal("nothing streamed")
			return nil
		}
	}
	if o := next(); stageOf(t, o) != remoteexecution.ExecutionStage_QUEUED || o.Done {
		t.Fatalf("first %v, want QUEUED", o)
	}
	op.setStage(remoteexecution.ExecutionStage_EXECUTING)
	if o := next(); stageOf(t, o) != remoteexecution.ExecutionStage_EXECUTING {
		t.Fatalf("second %v, want EXECUTING", o)
	}
	// The same stage again is no change.
	op.setStage(remoteexecution.ExecutionStage_EXECUTING)
	op.complete(&remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{ExitCode: 4}})
	o := next()
	if !o.Done || stageOf(t, o) != remoteexecution.ExecutionStage_COMPLETED {
		t.Fatalf("third %v, want done and COMPLETED (no duplicate EXECUTING)", o)
	}
	response := &remoteexecution.ExecuteResponse{}
	if err := o.GetResponse().UnmarshalTo(response); err != nil || response.Result.ExitCode != 4 {
		t.Fatalf("response %v (%v)", response, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	op.setStage(remoteexecution.ExecutionStage_EXECUTING)
	if snapshot, _, _ := op.snapshot(); stageOf(t, snapshot) != remoteexecution.ExecutionStage_COMPLETED {
		t.Error("a completed operation went back to EXECUTING")
	}

	// A failing send ends the stream with its error; so does a client
	// that leaves.
	broken := errors.New("stream broken")
	if err := newOperation("x", digestOfBytes(nil)).stream(context.Background(), func(*longrunning.Operation) error { return broken }); err != broken {
		t.Errorf("stream with a failing send: %v, want its error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := newOperation("y", digestOfBytes(nil)).stream(ctx, func(*longrunning.Operation) error { return nil }); err != context.Canceled {
		t.Errorf("stream after the client left: %v, want context.Canceled", err)
	}
}
