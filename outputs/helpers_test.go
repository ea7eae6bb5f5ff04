package outputs

import (
	"context"
	"path/filepath"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/layers/layerstest"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// Outputs are captured over real materialised input roots: the merged
// view is the layers' Directory trees under the action's upperdirs.

var sha256Function = layerstest.SHA256

type (
	file = layerstest.File
	exe  = layerstest.Exe
	dir  = layerstest.Dir
)

// testEnv is a local storage whose CAS counts Puts, with caches and a
// materializer in a temporary directory.
type testEnv struct {
	t       testing.TB
	dir     string
	storage *storage.Storage
	cas     *layerstest.CountingBlobAccess
	m       layers.Materializer
}

func newTestEnv(t testing.TB, options layers.MaterializerOptions) *testEnv {
	t.Helper()
	d := layerstest.TempDir(t)
	s, err := storage.NewLocalStorage(filepath.Join(d, "storage"), 256<<20, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	counting := &layerstest.CountingBlobAccess{BlobAccess: s.ContentAddressableStorage}
	s.ContentAddressableStorage = counting
	return newTestEnvOn(t, d, s, counting, options)
}

// newTestEnvOn opens the caches under d and materialises from s.
func newTestEnvOn(t testing.TB, d string, s *storage.Storage, counting *layerstest.CountingBlobAccess, options layers.MaterializerOptions) *testEnv {
	t.Helper()
	fc, err := layers.NewFileCache(filepath.Join(d, "files"), 1<<30, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	lc, err := layers.NewLayerCache(filepath.Join(d, "layers"), 1<<30, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, dir: d, storage: s, cas: counting, m: layers.NewMaterializer(s, fc, lc, options)}
}

func (e *testEnv) blobs() layerstest.Blobs {
	return layerstest.Blobs{T: e.t, CAS: e.storage.ContentAddressableStorage}
}

func (e *testEnv) putTree(d dir) digest.Digest {
	e.t.Helper()
	return e.blobs().PutTree(d)
}

func (e *testEnv) directoryOf(d dir, put bool) *remoteexecution.Directory {
	return e.blobs().DirectoryOf(d, put)
}

func (e *testEnv) putDirectory(d *remoteexecution.Directory) digest.Digest {
	return e.blobs().PutDirectory(d)
}

func (e *testEnv) mustMaterialize(root digest.Digest) *layers.InputRoot {
	e.t.Helper()
	r, err := e.m.Materialize(context.Background(), digest.EmptyInstanceName, root)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(r.Release)
	return r
}

func mountPaths(r *layers.InputRoot) []string {
	var out []string
	for _, m := range r.Mounts {
		out = append(out, m.Path)
	}
	return out
}

func digestOf(data []byte) digest.Digest { return layerstest.DigestOf(data) }

func marshal(m proto.Message) []byte { return layerstest.Marshal(m) }

func tempDir(t testing.TB) string { return layerstest.TempDir(t) }

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
