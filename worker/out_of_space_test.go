package worker

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/sandbox"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A client's input is never taken for the worker's full disk, whatever
// its names say: the executor tests the error's code and mark, not its
// text (it matched "no space left on device" anywhere in a message).
func TestLocalExecutorDoesNotTakeAnInputNamedLikeAnErrnoForAFullDisk(t *testing.T) {
	f := newExecutorFixture(t)
	f.useRealInputsAndOutputs()
	root := putMessage(t, f.storage, &remoteexecution.Directory{
		Symlinks: []*remoteexecution.SymlinkNode{{Name: "no space left on device", Target: "../../etc/passwd"}},
	})
	response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{InputRootDigest: root.GetProto()}, trueCommand), NoopObserver)
	st := status.FromProto(response.Status)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "escapes the input root") {
		t.Errorf("%v %q, want INVALID_ARGUMENT naming the escaping symlink", st.Code(), st.Message())
	}
}

// fullCAS is a CAS on a file system that has run out of space: every
// write fails with ENOSPC.
type fullCAS struct {
	blobstore.BlobAccess
}

func (c fullCAS) Put(ctx context.Context, d digest.Digest, b buffer.Buffer) error {
	b.Discard()
	return &os.PathError{Op: "write", Path: "/data/storage/cas/blocks", Err: syscall.ENOSPC}
}

// ENOSPC deep inside the output upload, below the uploader's and the
// capturer's wrapping, is the worker's full disk at the executor.
func TestLocalExecutorReportsAFullCASAsOutOfDiskSpace(t *testing.T) {
	f := newExecutorFixture(t)
	f.useRealInputsAndOutputs()
	f.runner.run = writeLogs("some output\n", "", sandbox.Result{})
	request := f.request(&remoteexecution.Action{}, trueCommand)
	f.storage.ContentAddressableStorage = fullCAS{BlobAccess: f.storage.ContentAddressableStorage}
	response := f.executor().Execute(context.Background(), request, NoopObserver)
	st := status.FromProto(response.Status)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "The worker is out of disk space") {
		t.Errorf("%v %q, want RESOURCE_EXHAUSTED out of disk space", st.Code(), st.Message())
	}
}

// A full disk met by the sandbox (creating its mount points, say) is
// the worker's too: the errno survives into the status as its mark.
func TestLocalExecutorReportsAFullDiskInTheSandboxAsOutOfDiskSpace(t *testing.T) {
	f := newExecutorFixture(t)
	f.runner.run = func(ctx context.Context, spec *sandbox.Spec) (*sandbox.Result, error) {
		return nil, &os.PathError{Op: "mkdir", Path: spec.Mounts[0].UpperDir + "/tmp", Err: syscall.ENOSPC}
	}
	response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{}, trueCommand), NoopObserver)
	st := status.FromProto(response.Status)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "The worker is out of disk space: Failed to run the action: mkdir") {
		t.Errorf("%v %q, want RESOURCE_EXHAUSTED out of disk space", st.Code(), st.Message())
	}
}
