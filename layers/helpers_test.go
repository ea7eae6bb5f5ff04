package layers

import (
	"context"
	"path/filepath"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layers/layerstest"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// Tree description used by tests: a map from name to file, exe,
// symlink or nested dir (see layerstest).
type (
	file    = layerstest.File
	exe     = layerstest.Exe
	symlink = layerstest.Symlink
	dir     = layerstest.Dir
	// union is a dir with a bitzel.layers property.
	union = layerstest.Union
)

type testEnv struct {
	t       testing.TB
	dir     string
	storage *storage.Storage
	cas     *layerstest.CountingBlobAccess
	files   *fileCache
	layers  *layerCache
	m       Materializer
}

func newTestEnv(t testing.TB, options MaterializerOptions) *testEnv {
	return newTestEnvWithLink(t, options, sysLinkat)
}

func newTestEnvWithLink(t testing.TB, options MaterializerOptions, link linkFunc) *testEnv {
	t.Helper()
	dir := tempDir(t)
	storage, err := storage.NewLocalStorage(filepath.Join(dir, "storage"), 256<<20, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { storage.Close() })
	counting := &layerstest.CountingBlobAccess{BlobAccess: storage.ContentAddressableStorage}
	storage.ContentAddressableStorage = counting
	fc, err := newFileCache(filepath.Join(dir, "files"), 1<<30, 1<<20, link)
	if err != nil {
		t.Fatal(err)
	}
	lc, err := newLayerCache(filepath.Join(dir, "layers"), 1<<30, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, dir: dir, storage: storage, cas: counting, files: fc, layers: lc, m: NewMaterializer(storage, fc, lc, options)}
}

func digestOf(data []byte) digest.Digest { return layerstest.DigestOf(data) }

func marshal(m proto.Message) []byte { return layerstest.Marshal(m) }

func (e *testEnv) blobs() layerstest.Blobs {
	return layerstest.Blobs{T: e.t, CAS: e.storage.ContentAddressableStorage}
}

func (e *testEnv) putBlob(data []byte) digest.Digest {
	e.t.Helper()
	return e.blobs().PutBlob(data)
}

// directoryOf converts a test tree into a Directory message, storing
// blobs and subdirectories when put is set.
func (e *testEnv) directoryOf(d dir, put bool) *remoteexecution.Directory {
	return e.blobs().DirectoryOf(d, put)
}

func (e *testEnv) putTree(d dir) digest.Digest {
	e.t.Helper()
	return e.blobs().PutTree(d)
}

// putDirectory stores a hand-made Directory message (for malformed
// trees the helpers would not build).
func (e *testEnv) putDirectory(d *remoteexecution.Directory) digest.Digest {
	return e.blobs().PutDirectory(d)
}

func (e *testEnv) materialize(root digest.Digest) (*InputRoot, error) {
	return e.m.Materialize(context.Background(), digest.EmptyInstanceName, root)
}

func (e *testEnv) mustMaterialize(root digest.Digest) *InputRoot {
	e.t.Helper()
	r, err := e.materialize(root)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(r.Release)
	return r
}

func layerString(d digest.Digest) string { return layerstest.LayerString(d) }

func readTree(t testing.TB, root string) []string {
	t.Helper()
	return layerstest.ReadTree(t, root)
}

func requireCode(t testing.TB, err error, code codes.Code, substrings ...string) {
	t.Helper()
	layerstest.RequireCode(t, err, code, substrings...)
}

func missingSubjects(t testing.TB, err error) []string {
	t.Helper()
	return layerstest.MissingSubjects(t, err)
}

func subject(d digest.Digest) string { return layerstest.Subject(d) }

func tempDir(t testing.TB) string { return layerstest.TempDir(t) }

func layerCacheEvictionsCount() float64 {
	var m dto.Metric
	if err := layerCacheEvictions.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
