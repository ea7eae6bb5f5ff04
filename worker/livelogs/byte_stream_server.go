package livelogs

import (
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// readChunkBytes bounds one ReadResponse, as bb-storage's server does
// for blobs.
const readChunkBytes = 64 << 10

type byteStreamServer struct {
	bytestream.ByteStreamServer
	registry *Registry
}

// NewByteStreamServer serves reads of the registry's live logs and
// passes every other call to base.
func NewByteStreamServer(base bytestream.ByteStreamServer, registry *Registry) bytestream.ByteStreamServer {
	return &byteStreamServer{ByteStreamServer: base, registry: registry}
}

func (s *byteStreamServer) Read(request *bytestream.ReadRequest, out bytestream.ByteStream_ReadServer) error {
	e, ok := s.registry.lookup(request.ResourceName)
	if !ok {
		if isName(request.ResourceName) {
			return status.Errorf(codes.NotFound, "Live log %q is not readable: its action is not running (it has completed, and its log is in the ActionResult), or the name is unknown", request.ResourceName)
		}
		return s.ByteStreamServer.Read(request, out)
	}
	ctx := out.Context()
	if ClientIdentity(ctx) != e.owner {
		return status.Errorf(codes.PermissionDenied, "Live log %q belongs to the client that started the execution", request.ResourceName)
	}
	if request.ReadOffset < 0 {
		return status.Errorf(codes.InvalidArgument, "Negative read_offset %d", request.ReadOffset)
	}
	if request.ReadLimit < 0 {
		return status.Errorf(codes.InvalidArgument, "Negative read_limit %d", request.ReadLimit)
	}
	offset, limit := request.ReadOffset, request.ReadLimit
	buffer := make([]byte, readChunkBytes)
	for {
		size, done, changed := e.source.Snapshot()
		if offset < size {
			chunk := buffer[:min(int64(len(buffer)), size-offset)]
			if limit > 0 {
				chunk = chunk[:min(int64(len(chunk)), limit)]
			}
			n, err := e.source.ReadAt(chunk, offset)
			if n > 0 {
				// gRPC has marshalled the message when Send
				// returns: the buffer can be reused.
				if err := out.Send(&bytestream.ReadResponse{Data: chunk[:n]}); err != nil {
					return err
				}
				offset += int64(n)
				if limit > 0 {
					if limit -= int64(n); limit == 0 {
						return nil
					}
				}
				continue
			}
			// The log was closed under the reader (its file is
			// the next action's once the action is gone).
			if err == nil {
				err = status.Error(codes.NotFound, "no data")
			}
			return util.StatusWrapfWithCode(err, codes.NotFound, "Live log %q ended before offset %d was read; the whole log is in the ActionResult", request.ResourceName, offset)
		}
		if done {
			if offset > size {
				return status.Errorf(codes.OutOfRange, "read_offset %d is past the end of live log %q (%d bytes)", request.ReadOffset, request.ResourceName, size)
			}
			return nil
		}
		// Past what is written so far: wait for more, as a client
		// following a growing log expects.
		select {
		case <-changed:
		case <-ctx.Done():
			return util.StatusFromContext(ctx)
		}
	}
}
