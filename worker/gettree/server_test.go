package gettree_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/worker/gettree"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// memoryCAS holds Directory messages by digest.
type memoryCAS struct {
	blobstore.BlobAccess
	blobs map[digest.Digest][]byte
	reads int
}

func (c *memoryCAS) Get(ctx context.Context, d digest.Digest) buffer.Buffer {
	c.reads++
	data, ok := c.blobs[d]
	if !ok {
		return buffer.NewBufferFromError(status.Error(codes.NotFound, "Object not found"))
	}
	return buffer.NewCASBufferFromByteSlice(d, data, buffer.UserProvided)
}

var sha256 = digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)

func (c *memoryCAS) put(t *testing.T, d *remoteexecution.Directory) *remoteexecution.Digest {
	data, err := proto.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	g := sha256.NewGenerator(int64(len(data)))
	g.Write(data)
	dg := g.Sum()
	c.blobs[dg] = data
	return dg.GetProto()
}

// fanOut builds a root with n subdirectories, each holding one file
// named after it and, to check that shared subtrees come once, the
// same empty directory.
func fanOut(t *testing.T, c *memoryCAS, n int) (*remoteexecution.Digest, int) {
	empty := c.put(t, &remoteexecution.Directory{})
	root := &remoteexecution.Directory{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("d%04d", i)
		child := c.put(t, &remoteexecution.Directory{
			Files:       []*remoteexecution.FileNode{{Name: name, Digest: &remoteexecution.Digest{Hash: strings.Repeat("0", 64), SizeBytes: 0}}},
			Directories: []*remoteexecution.DirectoryNode{{Name: "empty", Digest: empty}},
		})
		root.Directories = append(root.Directories, &remoteexecution.DirectoryNode{Name: name, Digest: child})
	}
	return c.put(t, root), n + 2
}

type stream struct {
	grpc.ServerStream
	responses []*remoteexecution.GetTreeResponse
}

func (s *stream) Context() context.Context { return context.Background() }
func (s *stream) Send(r *remoteexecution.GetTreeResponse) error {
	s.responses = append(s.responses, proto.Clone(r).(*remoteexecution.GetTreeResponse))
	return nil
}

func getTree(t *testing.T, s remoteexecution.ContentAddressableStorageServer, request *remoteexecution.GetTreeRequest) ([]*remoteexecution.Directory, string, int, error) {
	out := &stream{}
	err := s.GetTree(request, out)
	var dirs []*remoteexecution.Directory
	token := ""
	for i, r := range out.responses {
		dirs = append(dirs, r.Directories...)
		if r.NextPageToken != "" && i != len(out.responses)-1 {
			t.Errorf("next_page_token on message %d of %d of a page", i, len(out.responses))
		}
		token = r.NextPageToken
	}
	return dirs, token, len(out.responses), err
}

func TestGetTreePagesRoundTrip(t *testing.T) {
	c := &memoryCAS{blobs: map[digest.Digest][]byte{}}
	root, total := fanOut(t, c, 25)
	s := gettree.NewServer(nil, c, 4<<20)
	seen := map[string]bool{}
	token, pages := "", 0
	for {
		dirs, next, _, err := getTree(t, s, &remoteexecution.GetTreeRequest{RootDigest: root, PageSize: 7, PageToken: token})
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		if len(dirs) > 7 {
			t.Fatalf("page %d has %d directories, over page_size 7", pages, len(dirs))
		}
		pages++
		for _, d := range dirs {
			data, _ := proto.Marshal(d)
			if seen[string(data)] {
				t.Errorf("directory %v returned twice", d)
			}
			seen[string(data)] = true
		}
		if next == "" {
			break
		}
		token = next
	}
	if len(seen) != total || pages != (total+6)/7 {
		t.Errorf("%d directories in %d pages, want %d in %d", len(seen), pages, total, (total+6)/7)
	}
}

func TestGetTreePageSizeZeroIsServerDefault(t *testing.T) {
	c := &memoryCAS{blobs: map[digest.Digest][]byte{}}
	root, total := fanOut(t, c, gettree.DefaultPageSize+5)
	s := gettree.NewServer(nil, c, 4<<20)
	dirs, token, messages, err := getTree(t, s, &remoteexecution.GetTreeRequest{RootDigest: root})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != gettree.DefaultPageSize || token == "" {
		t.Fatalf("first page: %d directories, token %q; want %d and a token", len(dirs), token, gettree.DefaultPageSize)
	}
	if messages < 1 {
		t.Fatal("no message sent")
	}
	rest, token, _, err := getTree(t, s, &remoteexecution.GetTreeRequest{RootDigest: root, PageToken: token})
	if err != nil || token != "" || len(dirs)+len(rest) != total {
		t.Fatalf("second page: %d directories, token %q, %v; want %d in all", len(rest), token, err, total)
	}
}

func TestGetTreeSplitsAPageBelowTheMessageLimit(t *testing.T) {
	c := &memoryCAS{blobs: map[digest.Digest][]byte{}}
	// A chain: every directory is small, the page is not.
	total := 200
	var root *remoteexecution.Digest
	for i := 0; i < total; i++ {
		d := &remoteexecution.Directory{Files: []*remoteexecution.FileNode{{Name: fmt.Sprintf("file%04d", i), Digest: &remoteexecution.Digest{Hash: strings.Repeat("0", 64)}}}}
		if root != nil {
			d.Directories = []*remoteexecution.DirectoryNode{{Name: "next", Digest: root}}
		}
		root = c.put(t, d)
	}
	s := gettree.NewServer(nil, c, 8<<10)
	dirs, token, messages, err := getTree(t, s, &remoteexecution.GetTreeRequest{RootDigest: root})
	if err != nil || token != "" || len(dirs) != total {
		t.Fatalf("%d directories, token %q, %v", len(dirs), token, err)
	}
	if messages < 2 {
		t.Errorf("a page of %d directories went in %d message under an 8 KiB limit", total, messages)
	}
}

func TestGetTreeBadTokens(t *testing.T) {
	c := &memoryCAS{blobs: map[digest.Digest][]byte{}}
	root, _ := fanOut(t, c, 10)
	other, _ := fanOut(t, c, 3)
	s := gettree.NewServer(nil, c, 4<<20)
	_, token, _, err := getTree(t, s, &remoteexecution.GetTreeRequest{RootDigest: root, PageSize: 2})
	if err != nil || token == "" {
		t.Fatal(token, err)
	}
	for _, bad := range []struct {
		name  string
		root  *remoteexecution.Digest
		token string
	}{
		{"garbage", root, "not a token!"},
		{"base64 of garbage", root, "aGVsbG8"},
		{"another tree's token", other, token},
	} {
		_, _, _, err := getTree(t, s, &remoteexecution.GetTreeRequest{RootDigest: bad.root, PageToken: bad.token})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "page_token") {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming page_token", bad.name, err)
		}
	}
}

func TestGetTreeMissingDirectoryIsNotFoundNamingIt(t *testing.T) {
	c := &memoryCAS{blobs: map[digest.Digest][]byte{}}
	missing := &remoteexecution.Digest{Hash: strings.Repeat("a", 64), SizeBytes: 42}
	root := c.put(t, &remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{{Name: "gone", Digest: missing}}})
	s := gettree.NewServer(nil, c, 4<<20)
	_, _, _, err := getTree(t, s, &remoteexecution.GetTreeRequest{RootDigest: root})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), missing.Hash) {
		t.Errorf("%v, want NOT_FOUND naming %s", err, missing.Hash)
	}
	_, _, _, err = getTree(t, s, &remoteexecution.GetTreeRequest{RootDigest: missing})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), missing.Hash) {
		t.Errorf("missing root: %v", err)
	}
}
