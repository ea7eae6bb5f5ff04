package cas

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

var sha256Function = digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)

// Tree description used by tests: a map from name to file, exe,
// symlink or nested dir.
type (
	file    string
	exe     string
	symlink string
	dir     map[string]any
	// union is a dir with a bitzel.layers property.
	union struct {
		entries dir
		layers  string
	}
)

// countingBlobAccess counts Puts, to prove that untouched outputs are
// not uploaded.
type countingBlobAccess struct {
	blobstore.BlobAccess
	puts atomic.Int64
	mu   sync.Mutex
	put  map[digest.Digest]int
}

func (c *countingBlobAccess) Put(ctx context.Context, d digest.Digest, b buffer.Buffer) error {
	c.puts.Add(1)
	c.mu.Lock()
	if c.put == nil {
		c.put = map[digest.Digest]int{}
	}
	c.put[digest.MustNewDigest("", d.GetDigestFunction().GetEnumValue(), d.GetHashString(), d.GetSizeBytes())]++
	c.mu.Unlock()
	return c.BlobAccess.Put(ctx, d, b)
}

func (c *countingBlobAccess) reset() map[digest.Digest]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.put
	c.put = map[digest.Digest]int{}
	return old
}

type testEnv struct {
	t       testing.TB
	dir     string
	storage *Storage
	cas     *countingBlobAccess
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
	storage, err := NewLocalStorage(filepath.Join(dir, "storage"), 256<<20, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { storage.Close() })
	counting := &countingBlobAccess{BlobAccess: storage.ContentAddressableStorage}
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

func digestOf(data []byte) digest.Digest {
	g := sha256Function.NewGenerator(int64(len(data)))
	g.Write(data)
	return g.Sum()
}

func (e *testEnv) putBlob(data []byte) digest.Digest {
	e.t.Helper()
	d := digestOf(data)
	if err := e.storage.ContentAddressableStorage.Put(context.Background(), d, buffer.NewValidatedBufferFromByteSlice(data)); err != nil {
		e.t.Fatal(err)
	}
	return d
}

func marshal(m proto.Message) []byte {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	return data
}

// directoryOf converts a test tree into a Directory message, storing
// blobs and subdirectories when put is set.
func (e *testEnv) directoryOf(d dir, put bool) *remoteexecution.Directory {
	names := make([]string, 0, len(d))
	for n := range d {
		names = append(names, n)
	}
	sort.Strings(names)
	out := &remoteexecution.Directory{}
	for _, n := range names {
		switch v := d[n].(type) {
		case file:
			out.Files = append(out.Files, &remoteexecution.FileNode{Name: n, Digest: e.blobDigest([]byte(v), put).GetProto()})
		case exe:
			out.Files = append(out.Files, &remoteexecution.FileNode{Name: n, Digest: e.blobDigest([]byte(v), put).GetProto(), IsExecutable: true})
		case symlink:
			out.Symlinks = append(out.Symlinks, &remoteexecution.SymlinkNode{Name: n, Target: string(v)})
		case dir:
			out.Directories = append(out.Directories, &remoteexecution.DirectoryNode{Name: n, Digest: e.putTreeMaybe(v, put).GetProto()})
		case union:
			sub := e.directoryOf(v.entries, put)
			sub.NodeProperties = &remoteexecution.NodeProperties{Properties: []*remoteexecution.NodeProperty{{Name: LayersPropertyName, Value: v.layers}}}
			out.Directories = append(out.Directories, &remoteexecution.DirectoryNode{Name: n, Digest: e.blobDigest(marshal(sub), put).GetProto()})
		case *remoteexecution.Directory:
			out.Directories = append(out.Directories, &remoteexecution.DirectoryNode{Name: n, Digest: e.blobDigest(marshal(v), put).GetProto()})
		default:
			panic("unknown tree entry")
		}
	}
	return out
}

func (e *testEnv) blobDigest(data []byte, put bool) digest.Digest {
	if put {
		return e.putBlob(data)
	}
	return digestOf(data)
}

func (e *testEnv) putTreeMaybe(d dir, put bool) digest.Digest {
	return e.blobDigest(marshal(e.directoryOf(d, put)), put)
}

func (e *testEnv) putTree(d dir) digest.Digest {
	e.t.Helper()
	return e.putTreeMaybe(d, true)
}

// putDirectory stores a hand-made Directory message (for malformed
// trees the helpers would not build).
func (e *testEnv) putDirectory(d *remoteexecution.Directory) digest.Digest {
	return e.putBlob(marshal(d))
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

func layerString(d digest.Digest) string {
	return d.GetHashString() + "/" + strconv.FormatInt(d.GetSizeBytes(), 10)
}

// readTree lists a materialised directory as "path kind mode [content|target]"
// lines, to compare layers with expectations.
func readTree(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out = append(out, rel+" symlink "+target)
		case info.IsDir():
			out = append(out, rel+" dir "+info.Mode().Perm().String())
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out = append(out, rel+" file "+info.Mode().Perm().String()+" "+string(data))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func requireCode(t testing.TB, err error, code codes.Code, substrings ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got error %v, want code %s", err, code)
	}
	for _, s := range substrings {
		if !strings.Contains(status.Convert(err).Message(), s) {
			t.Fatalf("error %q does not mention %q", status.Convert(err).Message(), s)
		}
	}
}

// missingSubjects returns the MISSING violations of a precondition failure.
func missingSubjects(t testing.TB, err error) []string {
	t.Helper()
	requireCode(t, err, codes.FailedPrecondition)
	var subjects []string
	for _, d := range status.Convert(err).Details() {
		if pf, ok := d.(*errdetails.PreconditionFailure); ok {
			for _, v := range pf.Violations {
				if v.Type != "MISSING" {
					t.Fatalf("violation type %q", v.Type)
				}
				subjects = append(subjects, v.Subject)
			}
		}
	}
	sort.Strings(subjects)
	return subjects
}

func subject(d digest.Digest) string {
	return "blobs/" + d.GetHashString() + "/" + strconv.FormatInt(d.GetSizeBytes(), 10)
}

// tempDir is t.TempDir for trees holding read-only directories, which
// an unprivileged test must make writable again before removal.
func tempDir(t testing.TB) string {
	dir := t.TempDir()
	t.Cleanup(func() {
		if err := removeTree(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

func layerCacheEvictionsCount() float64 {
	var m dto.Metric
	if err := layerCacheEvictions.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
