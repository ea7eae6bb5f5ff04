package client

import (
	"context"
	"errors"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/genproto/googleapis/longrunning"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	queued    = remoteexecution.ExecutionStage_QUEUED
	executing = remoteexecution.ExecutionStage_EXECUTING
	completed = remoteexecution.ExecutionStage_COMPLETED
)

func TestExecuteReturnsTheDoneOperationsResponseAndShowsEveryOperation(t *testing.T) {
	f := newFakeREAPI()
	action := blobDigest(t, []byte("action"))
	result := &remoteexecution.ActionResult{ExitCode: 3}
	ops := []*longrunning.Operation{
		operation(t, "op", queued, false, nil, nil),
		operation(t, "op", executing, false, nil, nil),
		// A second update in the same stage (a server's keep-alive)
		// is an operation to observe but no new stage.
		operation(t, "op", executing, false, nil, nil),
		operation(t, "op", completed, true, result, nil),
	}
	f.scripts[action.GetHashString()] = script{ops: ops}
	r := f.dial(t, "main")
	var seen []*longrunning.Operation
	progress := &recordedProgress{}
	response, err := r.ExecuteObserving(context.Background(), action, true, progress, func(op *longrunning.Operation) { seen = append(seen, op) })
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(response.Result, result) {
		t.Errorf("result %v, want %v", response.Result, result)
	}
	if !equalMessages(seen, ops) {
		t.Errorf("observed %v, want every operation sent: %v", seen, ops)
	}
	if want := []remoteexecution.ExecutionStage_Value{queued, executing, completed}; !equalStages(progress.stages, want) {
		t.Errorf("stages %v, want %v", progress.stages, want)
	}
	want := &remoteexecution.ExecuteRequest{InstanceName: "main", ActionDigest: action.GetProto(), SkipCacheLookup: true, DigestFunction: remoteexecution.DigestFunction_SHA256}
	if len(f.executes) != 1 || !proto.Equal(f.executes[0], want) {
		t.Errorf("requests %v, want %v", f.executes, want)
	}
}

func equalStages(a, b []remoteexecution.ExecutionStage_Value) bool {
	return len(a) == len(b) && strings.Join(stageNames(a), ",") == strings.Join(stageNames(b), ",")
}

func stageNames(stages []remoteexecution.ExecutionStage_Value) []string {
	names := make([]string, len(stages))
	for i, s := range stages {
		names[i] = s.String()
	}
	return names
}

// A stream that fails keeps the server's code, and names the operation
// it was following; one that fails before any operation says so.
func TestExecuteStreamErrorKeepsItsCode(t *testing.T) {
	f := newFakeREAPI()
	midway, early := blobDigest(t, []byte("midway")), blobDigest(t, []byte("early"))
	f.scripts[midway.GetHashString()] = script{
		ops: []*longrunning.Operation{operation(t, "op-midway", executing, false, nil, nil)},
		end: status.Error(codes.ResourceExhausted, "the worker ran out of disk"),
	}
	f.scripts[early.GetHashString()] = script{end: status.Error(codes.PermissionDenied, "not for you")}
	r := f.dial(t, "")
	_, err := r.Execute(context.Background(), midway, false, &recordedProgress{})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "the worker ran out of disk") || !strings.Contains(st.Message(), `"op-midway"`) {
		t.Errorf("error midway: %v, want RESOURCE_EXHAUSTED with the server's message naming the operation", err)
	}
	_, err = r.Execute(context.Background(), early, false, &recordedProgress{})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "not for you") {
		t.Errorf("error before any operation: %v, want PERMISSION_DENIED with the server's message", err)
	}
}

// A done operation without an ExecuteResponse is the server breaking
// REAPI: an error naming the operation, never a nil response with a
// nil error. A done operation with an error is that error, its code
// kept.
func TestDoneOperationWithoutAResponse(t *testing.T) {
	notAResponse, err := anypb.New(&remoteexecution.ExecuteOperationMetadata{})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		op   *longrunning.Operation
		code codes.Code
	}{
		"no result":             {operation(t, "op-empty", completed, true, nil, nil), codes.Internal},
		"another message":       {&longrunning.Operation{Name: "op-other", Done: true, Result: &longrunning.Operation_Response{Response: notAResponse}}, codes.Internal},
		"an error":              {operation(t, "op-error", completed, true, nil, status.New(codes.FailedPrecondition, "missing input")), codes.FailedPrecondition},
		"an error with code OK": {&longrunning.Operation{Name: "op-ok", Done: true, Result: &longrunning.Operation_Error{Error: status.New(codes.OK, "").Proto()}}, codes.Internal},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeREAPI()
			action := blobDigest(t, []byte(name))
			f.scripts[action.GetHashString()] = script{ops: []*longrunning.Operation{c.op}}
			response, err := f.dial(t, "").Execute(context.Background(), action, false, &recordedProgress{})
			if status.Code(err) != c.code || !strings.Contains(err.Error(), c.op.Name) || response != nil {
				t.Errorf("%v, %v; want no response and %v naming %s", response, err, c.code, c.op.Name)
			}
		})
	}
}

// An Execute stream that ends before its operation is done (REAPI lets
// a server drop it) is UNAVAILABLE naming the operation, and
// WaitExecution with that name follows it to the end.
func TestWaitExecutionAfterADroppedStream(t *testing.T) {
	f := newFakeREAPI()
	action := blobDigest(t, []byte("dropped"))
	result := &remoteexecution.ActionResult{StdoutRaw: []byte("finished\n")}
	f.scripts[action.GetHashString()] = script{ops: []*longrunning.Operation{operation(t, "operations/1", queued, false, nil, nil)}}
	f.waits["operations/1"] = script{ops: []*longrunning.Operation{
		operation(t, "operations/1", executing, false, nil, nil),
		operation(t, "operations/1", completed, true, result, nil),
	}}
	r := f.dial(t, "")
	var last *longrunning.Operation
	_, err := r.ExecuteObserving(context.Background(), action, false, &recordedProgress{}, func(op *longrunning.Operation) { last = op })
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), `"operations/1"`) {
		t.Fatalf("dropped stream: %v, want UNAVAILABLE naming the operation", err)
	}
	progress := &recordedProgress{}
	response, err := r.WaitExecution(context.Background(), last.Name, progress, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(response.Result, result) || len(f.waited) != 1 || f.waited[0] != "operations/1" {
		t.Errorf("WaitExecution %v of %v, want %v of operations/1", response.Result, f.waited, result)
	}
	if want := []remoteexecution.ExecutionStage_Value{executing, completed}; !equalStages(progress.stages, want) {
		t.Errorf("stages %v, want %v", progress.stages, want)
	}
	// An unknown name keeps the server's NOT_FOUND.
	if _, err := r.WaitExecution(context.Background(), "operations/unknown", nil, nil); status.Code(err) != codes.NotFound {
		t.Errorf("WaitExecution of an unknown operation: %v, want NOT_FOUND", err)
	}
	// A stream that ends before its first operation is UNAVAILABLE too.
	empty := blobDigest(t, []byte("empty"))
	f.scripts[empty.GetHashString()] = script{}
	if _, err := r.Execute(context.Background(), empty, false, nil); status.Code(err) != codes.Unavailable {
		t.Errorf("empty stream: %v, want UNAVAILABLE", err)
	}
}

// Await stops at the operation asked for and leaves the rest of the
// stream to Follow: a test waits for EXECUTING, then for the result.
func TestAwaitThenFollowReadsOneStream(t *testing.T) {
	f := newFakeREAPI()
	action := blobDigest(t, []byte("await"))
	f.scripts[action.GetHashString()] = script{ops: []*longrunning.Operation{
		operation(t, "op", queued, false, nil, nil),
		operation(t, "op", executing, false, nil, nil),
		operation(t, "op", completed, true, &remoteexecution.ActionResult{ExitCode: 7}, nil),
	}}
	r := f.dial(t, "")
	stream, err := r.StartExecute(context.Background(), action, false)
	if err != nil {
		t.Fatal(err)
	}
	op, err := Await(stream, func(op *longrunning.Operation) bool { return Stage(op) == executing })
	if err != nil || Stage(op) != executing || op.Done {
		t.Fatalf("Await: %v, %v; want the EXECUTING update", op, err)
	}
	if _, err := Response(op); status.Code(err) != codes.Internal {
		t.Errorf("Response of an operation that is not done: %v, want INTERNAL", err)
	}
	var rest []remoteexecution.ExecutionStage_Value
	response, err := Follow(stream, func(op *longrunning.Operation) { rest = append(rest, Stage(op)) })
	if err != nil || response.Result.GetExitCode() != 7 {
		t.Fatalf("Follow: %v, %v", response, err)
	}
	if want := []remoteexecution.ExecutionStage_Value{completed}; !equalStages(rest, want) {
		t.Errorf("Follow saw %v, want only what Await left: %v", rest, want)
	}
	// An until that never holds stops at the done operation.
	stream, err = r.StartExecute(context.Background(), action, false)
	if err != nil {
		t.Fatal(err)
	}
	if op, err := Await(stream, func(*longrunning.Operation) bool { return false }); err != nil || !op.Done {
		t.Errorf("Await that is never satisfied: %v, %v; want the done operation", op, err)
	}
}

// Metadata of an operation without it is nil, and its stage UNKNOWN,
// not a panic: servers may send bare updates.
func TestMetadataOfABareOperation(t *testing.T) {
	bare := &longrunning.Operation{Name: "bare"}
	if Metadata(bare) != nil || Stage(bare) != remoteexecution.ExecutionStage_UNKNOWN {
		t.Errorf("metadata %v, stage %v", Metadata(bare), Stage(bare))
	}
	other, err := anypb.New(&remoteexecution.ExecuteResponse{})
	if err != nil {
		t.Fatal(err)
	}
	if m := Metadata(&longrunning.Operation{Metadata: other}); m != nil {
		t.Errorf("metadata of another message: %v", m)
	}
}

// An Execute call the server refuses outright keeps its code.
func TestExecuteRefusedKeepsItsCode(t *testing.T) {
	f := newFakeREAPI()
	// No script: the fake refuses with FAILED_PRECONDITION.
	_, err := f.dial(t, "").Execute(context.Background(), blobDigest(t, []byte("unknown")), false, nil)
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("%v, want FAILED_PRECONDITION", err)
	}
	var st interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &st) {
		t.Errorf("%v is not a status", err)
	}
}
