package cluster

import (
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"github.com/buildbarn/bb-storage/pkg/digest"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestCompletedResponseCarriesTheSchedulersMetadata(t *testing.T) {
	queued := timestamppb.New(time.Unix(1000, 0))
	fromScheduler, err := anypb.New(&remoteexecution.RequestMetadata{ToolInvocationId: "scheduler"})
	if err != nil {
		t.Fatal(err)
	}
	fromExecutor, err := anypb.New(&remoteexecution.RequestMetadata{ToolInvocationId: "executor"})
	if err != nil {
		t.Fatal(err)
	}
	a := &assignment{desired: &remoteworker.DesiredState_Executing{
		QueuedTimestamp:   queued,
		AuxiliaryMetadata: []*anypb.Any{fromScheduler},
	}}

	original := &remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{
		ExecutionMetadata: &remoteexecution.ExecutedActionMetadata{AuxiliaryMetadata: []*anypb.Any{fromExecutor}},
	}}
	patched := a.completeResponse(original)
	metadata := patched.Result.ExecutionMetadata
	if !proto.Equal(metadata.QueuedTimestamp, queued) {
		t.Errorf("queued_timestamp %v", metadata.QueuedTimestamp)
	}
	if len(metadata.AuxiliaryMetadata) != 2 || !proto.Equal(metadata.AuxiliaryMetadata[0], fromScheduler) || !proto.Equal(metadata.AuxiliaryMetadata[1], fromExecutor) {
		t.Errorf("auxiliary_metadata %v, want the scheduler's then the executor's", metadata.AuxiliaryMetadata)
	}
	if original.Result.ExecutionMetadata.QueuedTimestamp != nil || len(original.Result.ExecutionMetadata.AuxiliaryMetadata) != 1 {
		t.Error("the Executor's response was modified in place")
	}

	ownQueued := timestamppb.New(time.Unix(2000, 0))
	kept := a.completeResponse(&remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{
		ExecutionMetadata: &remoteexecution.ExecutedActionMetadata{QueuedTimestamp: ownQueued},
	}})
	if !proto.Equal(kept.Result.ExecutionMetadata.QueuedTimestamp, ownQueued) {
		t.Error("a queued_timestamp set by the Executor was overwritten")
	}

	failed := &remoteexecution.ExecuteResponse{Status: status.New(codes.Internal, "x").Proto()}
	if a.completeResponse(failed) != failed {
		t.Error("a response without a result was changed")
	}
}

func TestAssignmentComposesInstanceName(t *testing.T) {
	prefix, err := digest.NewInstanceName("a/b")
	if err != nil {
		t.Fatal(err)
	}
	patcher := digest.NewInstanceNamePatcher(digest.EmptyInstanceName, prefix)
	actionDigest := &remoteexecution.Digest{Hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", SizeBytes: 0}
	for suffix, want := range map[string]string{"": "a/b", "c": "a/b/c", "c/d": "a/b/c/d"} {
		a, err := newAssignment(patcher, &remoteworker.DesiredState_Executing{
			ActionDigest:       actionDigest,
			InstanceNameSuffix: suffix,
			DigestFunction:     remoteexecution.DigestFunction_SHA256,
		})
		if err != nil {
			t.Fatalf("suffix %q: %v", suffix, err)
		}
		if got := a.request.InstanceName.String(); got != want {
			t.Errorf("suffix %q gave %q, want %q", suffix, got, want)
		}
		if got := a.request.ActionDigest.GetDigestFunction().GetInstanceName().String(); got != want {
			t.Errorf("suffix %q: action digest bound to %q", suffix, got)
		}
	}
	for _, suffix := range []string{"/c", "c/", "c//d", "blobs/x"} {
		_, err := newAssignment(patcher, &remoteworker.DesiredState_Executing{ActionDigest: actionDigest, InstanceNameSuffix: suffix, DigestFunction: remoteexecution.DigestFunction_SHA256})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("suffix %q: %v, want INVALID_ARGUMENT", suffix, err)
		}
	}
}

func TestSchedulersMetadataGoesToTheExecutorAndIsNotDuplicated(t *testing.T) {
	queued := timestamppb.New(time.Unix(1000, 0))
	fromScheduler, err := anypb.New(&remoteexecution.RequestMetadata{ToolInvocationId: "scheduler"})
	if err != nil {
		t.Fatal(err)
	}
	desired := &remoteworker.DesiredState_Executing{
		ActionDigest:      &remoteexecution.Digest{Hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		DigestFunction:    remoteexecution.DigestFunction_SHA256,
		QueuedTimestamp:   queued,
		AuxiliaryMetadata: []*anypb.Any{fromScheduler},
	}
	a, err := newAssignment(digest.NewInstanceNamePatcher(digest.EmptyInstanceName, digest.EmptyInstanceName), desired)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(a.request.QueuedTimestamp, queued) || len(a.request.AuxiliaryMetadata) != 1 {
		t.Fatalf("the Executor is not told: queued %v, auxiliary %v", a.request.QueuedTimestamp, a.request.AuxiliaryMetadata)
	}
	// An Executor that reports them as asked (the local executor does).
	reported := &remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{
		ExecutionMetadata: &remoteexecution.ExecutedActionMetadata{
			QueuedTimestamp:   a.request.QueuedTimestamp,
			AuxiliaryMetadata: a.request.AuxiliaryMetadata,
		},
	}}
	if got := a.completeResponse(reported); got != reported {
		t.Errorf("a complete response was rewritten: %v", got)
	}
}
