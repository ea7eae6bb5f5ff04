package client

import (
	"io"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/genproto/googleapis/longrunning"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// OperationStream is an Execute or a WaitExecution stream: both send
// the same Operation updates, so one loop reads either.
type OperationStream interface {
	Recv() (*longrunning.Operation, error)
}

// Await reads stream until an operation for which until returns true,
// or one that is done, and returns it. until sees every operation in
// order, so it may also watch them; nil waits for the done one. This
// is the one loop over Recv for REAPI operations: Follow, Execute and
// WaitExecution, the e2e tests and the benchmark harness all read
// their streams through it.
//
// Errors are gRPC statuses: the stream's own, with its code, or
// UNAVAILABLE when the stream ends first (REAPI lets a server drop
// an Execute stream; WaitExecution with the last operation's name
// picks the execution up again).
func Await(stream OperationStream, until func(*longrunning.Operation) bool) (*longrunning.Operation, error) {
	var last *longrunning.Operation
	for {
		op, err := stream.Recv()
		if err == io.EOF {
			if last == nil {
				return nil, status.Error(codes.Unavailable, "the operation stream ended before it sent an operation")
			}
			return nil, status.Errorf(codes.Unavailable, "the operation stream ended before operation %q was done", last.Name)
		}
		if err != nil {
			if last == nil {
				return nil, util.StatusWrap(err, "operation stream")
			}
			return nil, util.StatusWrapf(err, "operation %q", last.Name)
		}
		last = op
		if (until != nil && until(op)) || op.Done {
			return op, nil
		}
	}
}

// Follow reads stream to the end of its operation and returns the
// operation's ExecuteResponse; observe, when not nil, sees every
// operation first, the done one included. A response with a non-OK
// Status (the action could not run) is returned as a response; an
// error is the stream's (see Await) or the done operation's error.
func Follow(stream OperationStream, observe func(*longrunning.Operation)) (*remoteexecution.ExecuteResponse, error) {
	op, err := Await(stream, func(op *longrunning.Operation) bool {
		if observe != nil {
			observe(op)
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	return Response(op)
}

// Response returns a done operation's ExecuteResponse, or its error as
// a status. An operation that is not done, or done with neither, is
// the server breaking REAPI: INTERNAL naming the operation.
func Response(op *longrunning.Operation) (*remoteexecution.ExecuteResponse, error) {
	if !op.Done {
		return nil, status.Errorf(codes.Internal, "operation %q is not done", op.Name)
	}
	if opErr := op.GetError(); opErr != nil {
		if opErr.Code == int32(codes.OK) {
			// status.ErrorProto would make this nil: no error, no response.
			return nil, status.Errorf(codes.Internal, "operation %q is done with an OK error and no ExecuteResponse", op.Name)
		}
		return nil, util.StatusWrapf(status.ErrorProto(opErr), "operation %q", op.Name)
	}
	response := &remoteexecution.ExecuteResponse{}
	if err := op.GetResponse().UnmarshalTo(response); err != nil {
		return nil, status.Errorf(codes.Internal, "operation %q is done without an ExecuteResponse: %v", op.Name, err)
	}
	return response, nil
}

// Metadata returns an operation's ExecuteOperationMetadata, nil when it
// has none or another message: REAPI asks for it, but an update
// without it carries nothing a client needs.
func Metadata(op *longrunning.Operation) *remoteexecution.ExecuteOperationMetadata {
	metadata := &remoteexecution.ExecuteOperationMetadata{}
	if op.GetMetadata() == nil || op.GetMetadata().UnmarshalTo(metadata) != nil {
		return nil
	}
	return metadata
}

// Stage is the stage an operation reports, UNKNOWN without metadata.
func Stage(op *longrunning.Operation) remoteexecution.ExecutionStage_Value {
	return Metadata(op).GetStage()
}
