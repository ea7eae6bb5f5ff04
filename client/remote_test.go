package client

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Upload sends only what FindMissingBlobs reports missing, small blobs
// batched and large ones (over half the batch limit) through
// ByteStream, from memory and from files; Read brings each back whole
// by the same two paths.
func TestUploadSendsWhatIsMissingAndReadBringsItBack(t *testing.T) {
	f := newFakeREAPI()
	r := f.dial(t, "main")
	// Small enough that a test blob goes through ByteStream in
	// several 1 MiB chunks.
	r.batchLimit = 64 << 10
	present := []byte("already there")
	f.blobs[digestOfBytes(present).Hash] = present
	small := []byte("small blob")
	large := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+5)
	fromFile := bytes.Repeat([]byte("file "), 20000)
	path := filepath.Join(t.TempDir(), "input")
	if err := os.WriteFile(path, fromFile, 0o644); err != nil {
		t.Fatal(err)
	}
	progress := &recordedProgress{}
	messages := map[digest.Digest][]byte{
		blobDigest(t, present): present,
		blobDigest(t, small):   small,
		blobDigest(t, large):   large,
	}
	files := map[digest.Digest]string{blobDigest(t, fromFile): path}
	if err := r.Upload(context.Background(), messages, files, progress); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.batched, []string{digestOfBytes(small).Hash}) {
		t.Errorf("batched %v, want only the small blob", f.batched)
	}
	slices.Sort(f.streamed)
	want := []string{digestOfBytes(large).Hash, digestOfBytes(fromFile).Hash}
	slices.Sort(want)
	if !slices.Equal(f.streamed, want) {
		t.Errorf("streamed %v, want the large blob and the file %v", f.streamed, want)
	}
	for _, name := range f.resources {
		if !strings.HasPrefix(name, "main/uploads/") || strings.Count(name, "/") != 5 {
			t.Errorf("ByteStream write of %q, want main/uploads/UUID/blobs/HASH/SIZE", name)
		}
	}
	if progress.uploaded != [2]int{3, 3} {
		t.Errorf("progress %v, want 3 of 3 missing blobs", progress.uploaded)
	}
	for _, data := range [][]byte{present, small, large, fromFile} {
		got, err := r.Read(context.Background(), blobDigest(t, data))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("read %d bytes back: %d bytes, %v", len(data), len(got), err)
		}
	}
	if got, err := r.Read(context.Background(), blobDigest(t, nil)); err != nil || len(got) != 0 {
		t.Errorf("read of the empty blob: %q, %v", got, err)
	}
	// A second upload of the same blobs only asks.
	calls := f.findMissingCalls
	f.batched, f.streamed = nil, nil
	if err := r.Upload(context.Background(), messages, files, progress); err != nil {
		t.Fatal(err)
	}
	if f.findMissingCalls != calls+1 || len(f.batched)+len(f.streamed) != 0 {
		t.Errorf("second upload wrote %v and %v", f.batched, f.streamed)
	}
}

// Bytes that do not match their digest are an error naming the blob,
// whichever way they were read; a blob the server lacks keeps NOT_FOUND.
func TestReadChecksWhatItGets(t *testing.T) {
	f := newFakeREAPI()
	r := f.dial(t, "")
	r.batchLimit = 64 << 10
	small, large := []byte("small blob"), bytes.Repeat([]byte("x"), 100<<10)
	for _, data := range [][]byte{small, large} {
		f.blobs[digestOfBytes(data).Hash] = data
	}
	f.corrupt = true
	for _, data := range [][]byte{small, large} {
		d := blobDigest(t, data)
		if _, err := r.Read(context.Background(), d); err == nil || !strings.Contains(err.Error(), d.GetHashString()) {
			t.Errorf("read of corrupted %d bytes: %v, want an error naming the digest", len(data), err)
		}
	}
	f.corrupt = false
	for _, data := range [][]byte{[]byte("missing"), bytes.Repeat([]byte("y"), 100<<10)} {
		if _, err := r.Read(context.Background(), blobDigest(t, data)); status.Code(err) != codes.NotFound {
			t.Errorf("read of a missing %d-byte blob: %v, want NOT_FOUND", len(data), err)
		}
	}
}

// A file that changes size between hashing and upload is refused, not
// uploaded under the wrong digest.
func TestUploadRefusesAFileThatChanged(t *testing.T) {
	f := newFakeREAPI()
	r := f.dial(t, "")
	path := filepath.Join(t.TempDir(), "input")
	original := []byte("original")
	if err := os.WriteFile(path, []byte("changed since"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := r.Upload(context.Background(), nil, map[digest.Digest]string{blobDigest(t, original): path}, &recordedProgress{})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("%v, want an error naming %s", err, path)
	}
	if len(f.blobs) != 0 {
		t.Errorf("stored %d blobs", len(f.blobs))
	}
}

// ByteStream names carry the instance name, and the digest function
// where the hash length does not tell it (REAPI 2.3): BLAKE3 and
// SHA-256 hashes have the same length.
func TestByteStreamNamesNameTheDigestFunction(t *testing.T) {
	f := newFakeREAPI()
	function := digest.MustNewFunction("main/sub", remoteexecution.DigestFunction_BLAKE3)
	r := f.dialIn(t, function)
	r.batchLimit = 64 << 10
	data := bytes.Repeat([]byte("blake3 "), 20000)
	generator := function.NewGenerator(int64(len(data)))
	generator.Write(data)
	d := generator.Sum()
	if err := r.Upload(context.Background(), map[digest.Digest][]byte{d: data}, nil, &recordedProgress{}); err != nil {
		t.Fatal(err)
	}
	got, err := r.Read(context.Background(), d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	suffix := fmt.Sprintf("/blobs/blake3/%s/%d", d.GetHashString(), len(data))
	if len(f.resources) != 2 || !strings.HasPrefix(f.resources[0], "main/sub/uploads/") || !strings.HasSuffix(f.resources[0], suffix) ||
		f.resources[1] != "main/sub"+suffix {
		t.Errorf("ByteStream names %q, want main/sub/uploads/UUID%s and main/sub%s", f.resources, suffix, suffix)
	}
}
