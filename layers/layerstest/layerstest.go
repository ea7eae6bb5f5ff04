// Package layerstest builds input trees in a CAS and checks what the
// layers and outputs packages make of them, for the tests of both (the
// output capture is tested over real materialised input roots). It is
// imported by tests only.
//
// It imports storage-level packages (bb-storage, the REAPI, and
// layerproperty), never layers itself, so that the layers package's own
// tests can use it.
package layerstest

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
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/layerproperty"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// SHA256 is the digest function of every tree the helpers build.
var SHA256 = digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)

// Tree description: a map from name to File, Exe, Symlink, a nested
// Dir or Union, or a hand-made *remoteexecution.Directory.
type (
	File    string
	Exe     string
	Symlink string
	Dir     map[string]any
	// Union is a Dir with a bitzel.layers property of value Layers.
	Union struct {
		Entries Dir
		Layers  string
	}
)

// DigestOf is the SHA-256 digest of data.
func DigestOf(data []byte) digest.Digest {
	g := SHA256.NewGenerator(int64(len(data)))
	g.Write(data)
	return g.Sum()
}

// Marshal encodes m deterministically, as digests of messages need.
func Marshal(m proto.Message) []byte {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	return data
}

// Blobs writes trees into a CAS.
type Blobs struct {
	T   testing.TB
	CAS blobstore.BlobAccess
}

// PutBlob stores data and returns its digest.
func (b Blobs) PutBlob(data []byte) digest.Digest {
	b.T.Helper()
	d := DigestOf(data)
	if err := b.CAS.Put(context.Background(), d, buffer.NewValidatedBufferFromByteSlice(data)); err != nil {
		b.T.Fatal(err)
	}
	return d
}

func (b Blobs) blobDigest(data []byte, put bool) digest.Digest {
	if put {
		return b.PutBlob(data)
	}
	return DigestOf(data)
}

// DirectoryOf converts a test tree into a Directory message, storing
// blobs and subdirectories when put is set.
func (b Blobs) DirectoryOf(d Dir, put bool) *remoteexecution.Directory {
	names := make([]string, 0, len(d))
	for n := range d {
		names = append(names, n)
	}
	sort.Strings(names)
	out := &remoteexecution.Directory{}
	for _, n := range names {
		switch v := d[n].(type) {
		case File:
			out.Files = append(out.Files, &remoteexecution.FileNode{Name: n, Digest: b.blobDigest([]byte(v), put).GetProto()})
		case Exe:
			out.Files = append(out.Files, &remoteexecution.FileNode{Name: n, Digest: b.blobDigest([]byte(v), put).GetProto(), IsExecutable: true})
		case Symlink:
			out.Symlinks = append(out.Symlinks, &remoteexecution.SymlinkNode{Name: n, Target: string(v)})
		case Dir:
			out.Directories = append(out.Directories, &remoteexecution.DirectoryNode{Name: n, Digest: b.putTreeMaybe(v, put).GetProto()})
		case Union:
			sub := b.DirectoryOf(v.Entries, put)
			sub.NodeProperties = &remoteexecution.NodeProperties{Properties: []*remoteexecution.NodeProperty{{Name: layerproperty.Name, Value: v.Layers}}}
			out.Directories = append(out.Directories, &remoteexecution.DirectoryNode{Name: n, Digest: b.blobDigest(Marshal(sub), put).GetProto()})
		case *remoteexecution.Directory:
			out.Directories = append(out.Directories, &remoteexecution.DirectoryNode{Name: n, Digest: b.blobDigest(Marshal(v), put).GetProto()})
		default:
			panic("unknown tree entry")
		}
	}
	return out
}

func (b Blobs) putTreeMaybe(d Dir, put bool) digest.Digest {
	return b.blobDigest(Marshal(b.DirectoryOf(d, put)), put)
}

// PutTree stores a test tree and returns the digest of its root.
func (b Blobs) PutTree(d Dir) digest.Digest {
	b.T.Helper()
	return b.putTreeMaybe(d, true)
}

// PutDirectory stores a hand-made Directory message (for malformed
// trees the helpers would not build).
func (b Blobs) PutDirectory(d *remoteexecution.Directory) digest.Digest {
	return b.PutBlob(Marshal(d))
}

// CountingBlobAccess counts Puts, to prove that untouched outputs are
// not uploaded.
type CountingBlobAccess struct {
	blobstore.BlobAccess
	Puts atomic.Int64
	mu   sync.Mutex
	put  map[digest.Digest]int
}

// Put counts the blob and stores it.
func (c *CountingBlobAccess) Put(ctx context.Context, d digest.Digest, b buffer.Buffer) error {
	c.Puts.Add(1)
	c.mu.Lock()
	if c.put == nil {
		c.put = map[digest.Digest]int{}
	}
	c.put[digest.MustNewDigest("", d.GetDigestFunction().GetEnumValue(), d.GetHashString(), d.GetSizeBytes())]++
	c.mu.Unlock()
	return c.BlobAccess.Put(ctx, d, b)
}

// Reset returns how often each blob was put since the last Reset.
func (c *CountingBlobAccess) Reset() map[digest.Digest]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.put
	c.put = map[digest.Digest]int{}
	return old
}

// LayerString is d as a bitzel.layers entry.
func LayerString(d digest.Digest) string {
	return d.GetHashString() + "/" + strconv.FormatInt(d.GetSizeBytes(), 10)
}

// ReadTree lists a materialised directory as "path kind mode
// [content|target]" lines, to compare layers with expectations.
func ReadTree(t testing.TB, root string) []string {
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

// RequireCode fails the test unless err has code and its message
// holds every substring.
func RequireCode(t testing.TB, err error, code codes.Code, substrings ...string) {
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

// MissingSubjects returns the MISSING violations of a precondition
// failure, sorted.
func MissingSubjects(t testing.TB, err error) []string {
	t.Helper()
	RequireCode(t, err, codes.FailedPrecondition)
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

// Subject is the MISSING violation subject of d.
func Subject(d digest.Digest) string {
	return "blobs/" + d.GetHashString() + "/" + strconv.FormatInt(d.GetSizeBytes(), 10)
}

// TempDir is t.TempDir for trees holding read-only directories, which
// an unprivileged test must make writable again before removal.
func TempDir(t testing.TB) string {
	dir := t.TempDir()
	t.Cleanup(func() {
		if err := fsutil.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}
