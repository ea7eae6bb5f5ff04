package storage

import (
	"context"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

var sha256Function = digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)

func digestOf(data []byte) digest.Digest {
	g := sha256Function.NewGenerator(int64(len(data)))
	g.Write(data)
	return g.Sum()
}

func newTestStorage(t *testing.T) *Storage {
	t.Helper()
	s, err := NewLocalStorage(t.TempDir(), 64<<20, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCorruptBatchedBlobRejected(t *testing.T) {
	s := newTestStorage(t)
	d := digestOf([]byte("expected"))
	s.batch = fakeBatch{data: map[digest.Digest][]byte{d: []byte("tampered")}}
	_, err := s.ReadSmallBlobs(context.Background(), []digest.Digest{d}, func(digest.Digest, []byte) error {
		t.Fatal("unverified data passed on")
		return nil
	})
	if err == nil {
		t.Fatal("corrupt batched blob accepted")
	}
}

type fakeBatch struct{ data map[digest.Digest][]byte }

func (f fakeBatch) BatchRead(ctx context.Context, digests []digest.Digest) (map[digest.Digest][]byte, []digest.Digest, error) {
	found := map[digest.Digest][]byte{}
	var missing []digest.Digest
	for _, d := range digests {
		if data, ok := f.data[d]; ok {
			found[d] = data
		} else {
			missing = append(missing, d)
		}
	}
	return found, missing, nil
}

func (f fakeBatch) BatchUpdate(ctx context.Context, blobs map[digest.Digest][]byte) error {
	for d, data := range blobs {
		f.data[d] = data
	}
	return nil
}
