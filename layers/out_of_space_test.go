package layers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitzel/bitzel-worker/storage"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A full disk while the file cache writes an input file is
// RESOURCE_EXHAUSTED at the Materializer's boundary, recognised by
// storage.IsOutOfSpace without its message naming the errno, and
// leaves nothing behind: the next Materialize, with room again,
// fetches the file.
func TestMaterializeReportsAFullDiskAsOutOfSpace(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	// /dev/full fails every write with ENOSPC, as a full file system
	// does.
	e.files.createTemp = func(name string) (*os.File, error) {
		return os.OpenFile("/dev/full", os.O_WRONLY, 0)
	}
	root := e.putTree(dir{"src": dir{"a.c": file("int a;")}})
	_, err := e.materialize(root)
	if status.Code(err) != codes.ResourceExhausted || !storage.IsOutOfSpace(err) {
		t.Fatalf("got %v, want RESOURCE_EXHAUSTED marked as out of space", err)
	}
	// Callers test the code and the mark; the errno's text is only
	// there for people.
	withoutErrno := status.Convert(err).Proto()
	withoutErrno.Message = strings.ReplaceAll(withoutErrno.Message, "no space left on device", "")
	if !storage.IsOutOfSpace(status.ErrorProto(withoutErrno)) {
		t.Fatal("out-of-space is only recognised by its message")
	}
	if entries, _ := os.ReadDir(filepath.Join(e.dir, "files", "tmp")); len(entries) != 0 {
		t.Fatalf("temporary files left: %v", entries)
	}

	e.files.createTemp = createTempFile
	r := e.mustMaterialize(root)
	if got := readTree(t, r.Mounts[0].Layers[0]); len(got) != 3 {
		t.Fatalf("layer after the disk has room again: %q", got)
	}
}
