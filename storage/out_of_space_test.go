package storage

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestIsOutOfSpace(t *testing.T) {
	enospc := &os.PathError{Op: "write", Path: "/data/files/tmp/1", Err: syscall.ENOSPC}
	marked := WrapFileSystemError(enospc, "Failed to write a file")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"ENOSPC", enospc, true},
		{"EDQUOT wrapped with %w", fmt.Errorf("write output: %w", syscall.EDQUOT), true},
		{"marked", marked, true},
		// The mark survives wrapping, even with another code.
		{"marked, wrapped", util.StatusWrapfWithCode(util.StatusWrap(marked, "Failed to fetch input files"), codes.Internal, "Layer %q", "src"), true},
		// What bb-storage makes of an errno: its text in UNKNOWN.
		{"errno text in UNKNOWN", status.Error(codes.Unknown, "write /cas/blocks: no space left on device"), true},
		// A client's input echoed back is never the worker's disk.
		{"errno text in INVALID_ARGUMENT", status.Error(codes.InvalidArgument, `input root: "no space left on device": symlink escapes the input root`), false},
		{"errno text in FAILED_PRECONDITION", status.Error(codes.FailedPrecondition, `Output directory "disk quota exceeded" is a regular file`), false},
		{"other RESOURCE_EXHAUSTED", status.Error(codes.ResourceExhausted, "Outputs exceed the worker's limit"), false},
		{"other errno", &os.PathError{Op: "open", Path: "x", Err: syscall.EACCES}, false},
	} {
		if got := IsOutOfSpace(tc.err); got != tc.want {
			t.Errorf("%s: IsOutOfSpace(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestWrapFileSystemError(t *testing.T) {
	enospc := &os.PathError{Op: "mkdir", Path: "/data/layers/tmp/1", Err: syscall.ENOSPC}
	for _, err := range []error{
		WrapFileSystemError(enospc, "Failed to create %q", "src"),
		WrapFileSystemErrorWithCode(enospc, codes.Internal, "Failed to create %q", "src"),
	} {
		if status.Code(err) != codes.ResourceExhausted || status.Convert(err).Message() != `Failed to create "src": mkdir /data/layers/tmp/1: no space left on device` {
			t.Errorf("got %v, want RESOURCE_EXHAUSTED with the context and the errno", err)
		}
	}
	// Anything else is wrapped as util.StatusWrapf(WithCode) would.
	notFound := status.Error(codes.NotFound, "Blob not found")
	if err := WrapFileSystemError(notFound, "Failed to write %s", "x"); status.Code(err) != codes.NotFound || IsOutOfSpace(err) {
		t.Errorf("got %v, want NOT_FOUND kept", err)
	}
	eacces := &os.PathError{Op: "open", Path: "x", Err: syscall.EACCES}
	if err := WrapFileSystemErrorWithCode(eacces, codes.Internal, "Failed to open"); status.Code(err) != codes.Internal || status.Convert(err).Message() != "Failed to open: open x: permission denied" {
		t.Errorf("got %v, want INTERNAL", err)
	}
	if err := WrapFileSystemError(eacces, "Failed to open"); status.Code(err) != codes.Unknown {
		t.Errorf("got %v, want UNKNOWN as util.StatusWrapf gives", err)
	}
}

// failingPuts fails every Put with err, as bb-storage's local store
// does on a full disk.
type failingPuts struct {
	blobstore.BlobAccess
	err error
}

func (f failingPuts) Put(ctx context.Context, d digest.Digest, b buffer.Buffer) error {
	b.Discard()
	return f.err
}

func TestLocalStoreReportsAFullDiskAsOutOfSpace(t *testing.T) {
	d := digestOf([]byte("blob"))
	for _, base := range []error{
		status.Error(codes.Unknown, "Failed to write block: write /data/storage/cas/blocks: no space left on device"),
		status.Error(codes.Internal, "Failed to write block: write /data/storage/cas/blocks: disk quota exceeded"),
		&os.PathError{Op: "write", Path: "/data/storage/cas/blocks", Err: syscall.ENOSPC},
	} {
		ba := newOutOfSpaceReportingBlobAccess(failingPuts{err: base})
		err := ba.Put(context.Background(), d, buffer.NewValidatedBufferFromByteSlice([]byte("blob")))
		if status.Code(err) != codes.ResourceExhausted || !IsOutOfSpace(err) {
			t.Errorf("Put failing with %v: got %v, want RESOURCE_EXHAUSTED marked as out of space", base, err)
		}
	}
	other := status.Error(codes.Unavailable, "Storage is shutting down")
	if err := newOutOfSpaceReportingBlobAccess(failingPuts{err: other}).Put(context.Background(), d, buffer.NewValidatedBufferFromByteSlice([]byte("blob"))); err != other {
		t.Errorf("got %v, want %v unchanged", err, other)
	}
}
