package outputs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// sparse makes a file of size bytes in an upper directory that uses no
// disk: what an action can leave with `truncate -s 200G`.
func (f *outputFixture) sparse(t *testing.T, mount int, rel string, size int64) {
	t.Helper()
	f.write(t, mount, rel, "", 0o644)
	must(t, os.Truncate(filepath.Join(f.uppers[mount], rel), size))
}

// captureWithin runs Capture and fails the test if it has not returned
// after a minute (a capture that reads a sparse file of hundreds of
// GiB would take many minutes): a guard against a hang, not a timing.
func captureWithin(t *testing.T, ctx context.Context, oc OutputCapturer, f *outputFixture, command *remoteexecution.Command) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := oc.Capture(ctx, digest.EmptyInstanceName, f.r, f.uppers, command)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("Capture still running after a minute")
		return nil
	}
}

func TestCaptureRefusesSparseFileBeyondBudget(t *testing.T) {
	f := newOutputFixture(t)
	f.sparse(t, 1, "huge", 200<<30)
	oc := NewOutputCapturer(f.e.storage, OutputCapturerOptions{MaximumBytes: 1 << 30})
	f.e.cas.Reset()
	for _, command := range []*remoteexecution.Command{
		{OutputPaths: []string{"out/huge"}},
		{OutputPaths: []string{"out"}},
	} {
		err := captureWithin(t, context.Background(), oc, f, command)
		requireCode(t, err, codes.ResourceExhausted, "out/huge", fmt.Sprint(200<<30))
	}
	// Nothing was uploaded of a capture that failed.
	if puts := f.e.cas.Reset(); len(puts) != 0 {
		t.Fatalf("%d blobs uploaded", len(puts))
	}
}

func TestCaptureRefusesFileBeyondStorageBlobSize(t *testing.T) {
	f := newOutputFixture(t)
	if f.e.storage.MaximumBlobSizeBytes <= 0 {
		t.Fatal("the local store reports no maximum blob size")
	}
	f.sparse(t, 1, "big", f.e.storage.MaximumBlobSizeBytes+1)
	err := captureWithin(t, context.Background(), f.oc, f, &remoteexecution.Command{OutputPaths: []string{"out/big"}})
	requireCode(t, err, codes.ResourceExhausted, "out/big", fmt.Sprint(f.e.storage.MaximumBlobSizeBytes))
}

func TestCaptureRefusesTooManyFiles(t *testing.T) {
	f := newOutputFixture(t)
	for i := 0; i < 50; i++ {
		f.write(t, 1, fmt.Sprintf("many/f%02d", i), "x", 0o644)
	}
	oc := NewOutputCapturer(f.e.storage, OutputCapturerOptions{MaximumEntries: 20})
	err := captureWithin(t, context.Background(), oc, f, &remoteexecution.Command{OutputPaths: []string{"out/many"}})
	requireCode(t, err, codes.ResourceExhausted, "limit of 20", "out/many/")
	// Within the limit, the same capturer works.
	_, err = oc.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, &remoteexecution.Command{OutputPaths: []string{"out/many/f01"}})
	must(t, err)
}

// unboundedCapturer lifts every size limit, so that only the deadline
// and cancellation can stop the hashing of a large sparse file.
func unboundedCapturer(f *outputFixture) OutputCapturer {
	storage := *f.e.storage
	storage.MaximumBlobSizeBytes = 0
	return NewOutputCapturer(&storage, OutputCapturerOptions{})
}

func TestCaptureStopsAtDeadline(t *testing.T) {
	f := newOutputFixture(t)
	f.sparse(t, 1, "huge", 1<<40)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := captureWithin(t, ctx, unboundedCapturer(f), f, &remoteexecution.Command{OutputPaths: []string{"out/huge"}})
	// Not UNAVAILABLE or DEADLINE_EXCEEDED, which clients retry.
	requireCode(t, err, codes.ResourceExhausted, "out/huge", "deadline")
}

func TestCaptureStopsOnCancellation(t *testing.T) {
	f := newOutputFixture(t)
	f.sparse(t, 1, "huge", 1<<40)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	err := captureWithin(t, ctx, unboundedCapturer(f), f, &remoteexecution.Command{OutputPaths: []string{"out/huge"}})
	requireCode(t, err, codes.Canceled, "out/huge")
}

// TestCaptureDeeperThanPathMax: an action can nest directories (with
// relative mkdir and chdir) deeper than the worker can name them. That
// is the action's doing: INVALID_ARGUMENT with a short message.
func TestCaptureDeeperThanPathMax(t *testing.T) {
	f := newOutputFixture(t)
	name := strings.Repeat("d", 200)
	fd, err := unix.Open(f.uppers[1], unix.O_DIRECTORY|unix.O_RDONLY, 0)
	must(t, err)
	depth := 0
	for ; depth*(len(name)+1) < 2*unix.PathMax; depth++ {
		must(t, unix.Mkdirat(fd, name, 0o755))
		next, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		must(t, err)
		unix.Close(fd)
		fd = next
	}
	must(t, unix.Close(fd))
	t.Cleanup(func() { removeDeep(t, f.uppers[1], name, depth) })
	_, err = f.oc.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, &remoteexecution.Command{OutputPaths: []string{"out"}})
	t.Log(err)
	requireCode(t, err, codes.InvalidArgument, "PATH_MAX")
	if n := len(status.Convert(err).Message()); n > 1000 {
		t.Fatalf("message of %d bytes", n)
	}
}

// removeDeep removes a chain of directories too deep for os.RemoveAll
// to name, from the bottom up through directory fds.
func removeDeep(t *testing.T, top, name string, depth int) {
	fds := []int{}
	fd, err := unix.Open(top, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	must(t, err)
	for i := 0; i < depth-1; i++ {
		fds = append(fds, fd)
		fd, err = unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		must(t, err)
	}
	fds = append(fds, fd)
	for i := len(fds) - 1; i >= 0; i-- {
		must(t, unix.Unlinkat(fds[i], name, unix.AT_REMOVEDIR))
		unix.Close(fds[i])
	}
}
