// Package gettree implements the ContentAddressableStorage service's
// GetTree, which bb-storage's CAS server leaves Unimplemented, over any
// BlobAccess: serve's local CAS.
//
// Pages are stateless: a page token names the root and how many
// directories earlier pages returned, and each call walks the tree
// again from the root in the same breadth-first order, skipping those.
// The server keeps nothing between calls, so a token stays valid for as
// long as the tree is in the CAS, across restarts; the price is that
// page k reads the directories of pages 1..k-1 again (from the local
// CAS, they are small and hot). A tree that fits the default page is
// read once.
package gettree

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// DefaultPageSize is the number of directories a call returns when the
// request's page_size is 0, and the most it returns whatever the
// request asks.
const DefaultPageSize = 10000

type server struct {
	remoteexecution.ContentAddressableStorageServer
	contentAddressableStorage blobstore.BlobAccess
	maximumMessageSizeBytes   int
}

// NewServer returns base with GetTree implemented over
// contentAddressableStorage; every other method is base's.
// Responses stay below maximumMessageSizeBytes: a page too large for
// one message is streamed as several.
func NewServer(base remoteexecution.ContentAddressableStorageServer, contentAddressableStorage blobstore.BlobAccess, maximumMessageSizeBytes int) remoteexecution.ContentAddressableStorageServer {
	return &server{
		ContentAddressableStorageServer: base,
		contentAddressableStorage:       contentAddressableStorage,
		maximumMessageSizeBytes:         maximumMessageSizeBytes,
	}
}

func (s *server) GetTree(request *remoteexecution.GetTreeRequest, out remoteexecution.ContentAddressableStorage_GetTreeServer) error {
	instanceName, err := digest.NewInstanceName(request.InstanceName)
	if err != nil {
		return util.StatusWrapf(err, "Invalid instance name %#v", request.InstanceName)
	}
	if request.RootDigest == nil {
		return status.Error(codes.InvalidArgument, "GetTreeRequest.root_digest is not set")
	}
	digestFunction, err := instanceName.GetDigestFunction(request.DigestFunction, len(request.RootDigest.Hash))
	if err != nil {
		return util.StatusWrap(err, "Invalid digest function")
	}
	rootDigest, err := digestFunction.NewDigestFromProto(request.RootDigest)
	if err != nil {
		return util.StatusWrap(err, "Invalid root digest")
	}
	if request.PageSize < 0 {
		return status.Errorf(codes.InvalidArgument, "GetTreeRequest.page_size is %d; it must not be negative", request.PageSize)
	}
	pageSize := int(request.PageSize)
	if pageSize == 0 || pageSize > DefaultPageSize {
		pageSize = DefaultPageSize
	}
	offset := 0
	if request.PageToken != "" {
		if offset, err = parsePageToken(request.PageToken, rootDigest); err != nil {
			return err
		}
	}

	w := &walk{ctx: out.Context(), s: s, function: digestFunction, root: rootDigest, seen: map[digest.Digest]bool{}}
	w.queue = append(w.queue, rootDigest)
	w.seen[rootDigest] = true
	// Earlier pages' directories: read again for their children.
	for i := 0; i < offset; i++ {
		if _, _, ok, err := w.next(); err != nil {
			return err
		} else if !ok {
			return status.Errorf(codes.InvalidArgument, "Invalid page_token %q: the tree of %s has only %d directories", request.PageToken, rootDigest, i)
		}
	}

	// A page is one or more stream messages, each kept below the
	// message size limit with room for the token and framing.
	limit := s.maximumMessageSizeBytes - 1024
	response := &remoteexecution.GetTreeResponse{}
	responseBytes := 0
	for returned := 0; returned < pageSize; returned++ {
		directory, size, ok, err := w.next()
		if err != nil {
			return err
		}
		if !ok {
			return out.Send(response)
		}
		if len(response.Directories) > 0 && responseBytes+size+8 > limit {
			if err := out.Send(response); err != nil {
				return err
			}
			response, responseBytes = &remoteexecution.GetTreeResponse{}, 0
		}
		response.Directories = append(response.Directories, directory)
		responseBytes += size + 8
	}
	if w.more() {
		response.NextPageToken = newPageToken(rootDigest, offset+pageSize)
	}
	return out.Send(response)
}

// walk visits a tree's directories breadth first, each distinct
// directory once, in the order of the Directory messages' entries.
type walk struct {
	ctx      context.Context
	s        *server
	function digest.Function
	root     digest.Digest
	queue    []digest.Digest
	seen     map[digest.Digest]bool
}

func (w *walk) more() bool { return len(w.queue) > 0 }

// next reads the next directory and queues its children; ok is false
// once the tree is exhausted.
func (w *walk) next() (*remoteexecution.Directory, int, bool, error) {
	if len(w.queue) == 0 {
		return nil, 0, false, nil
	}
	d := w.queue[0]
	w.queue = w.queue[1:]
	m, err := w.s.contentAddressableStorage.Get(w.ctx, d).ToProto(&remoteexecution.Directory{}, w.s.maximumMessageSizeBytes)
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return nil, 0, false, status.Errorf(codes.NotFound, "Directory %s of the tree of %s is not in the CAS", d, w.root)
		}
		return nil, 0, false, util.StatusWrapf(err, "Failed to read directory %s of the tree of %s", d, w.root)
	}
	directory := m.(*remoteexecution.Directory)
	for _, child := range directory.Directories {
		childDigest, err := w.function.NewDigestFromProto(child.Digest)
		if err != nil {
			return nil, 0, false, util.StatusWrapf(err, "Directory %s: invalid digest of child directory %q", d, child.Name)
		}
		if !w.seen[childDigest] {
			w.seen[childDigest] = true
			w.queue = append(w.queue, childDigest)
		}
	}
	return directory, proto.Size(directory), true, nil
}

// A page token is "v1 HASH-SIZE OFFSET", base64url-encoded: opaque to
// clients, and bound to its root so that it cannot be used with
// another tree.
func newPageToken(root digest.Digest, offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("v1 %s-%d %d", root.GetHashString(), root.GetSizeBytes(), offset)))
}

func parsePageToken(token string, root digest.Digest) (int, error) {
	data, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "Invalid page_token %q: not one this server returned", token)
	}
	fields := strings.Fields(string(data))
	if len(fields) != 3 || fields[0] != "v1" {
		return 0, status.Errorf(codes.InvalidArgument, "Invalid page_token %q: not one this server returned", token)
	}
	if want := fmt.Sprintf("%s-%d", root.GetHashString(), root.GetSizeBytes()); fields[1] != want {
		return 0, status.Errorf(codes.InvalidArgument, "Invalid page_token %q: it belongs to the tree of %s, not of %s", token, fields[1], want)
	}
	offset, err := strconv.Atoi(fields[2])
	if err != nil || offset <= 0 {
		return 0, status.Errorf(codes.InvalidArgument, "Invalid page_token %q: not one this server returned", token)
	}
	return offset, nil
}
