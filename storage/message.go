package storage

import (
	"context"

	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ReadMessage reads a proto message (an Action, a Command) from the CAS
// into template and returns it (or, for local storage, the message
// bb-storage returns in its place). From remote storage a message up to
// SmallBlobSizeBytes comes in one unary BatchReadBlobs call rather than
// a ByteStream read: a stream of its own per blob costs this worker and
// bb_storage more, and a worker in a cluster reads a Command for every
// action. Absent: NOT_FOUND; not a valid message: INVALID_ARGUMENT.
func (s *Storage) ReadMessage(ctx context.Context, d digest.Digest, template proto.Message) (proto.Message, error) {
	if s.batch == nil || d.GetSizeBytes() > s.SmallBlobSizeBytes() {
		return s.ContentAddressableStorage.Get(ctx, d).ToProto(template, s.MaximumMessageSizeBytes)
	}
	missing, err := s.ReadSmallBlobs(ctx, []digest.Digest{d}, func(d digest.Digest, data []byte) error {
		// data was checked against d by ReadSmallBlobs.
		if err := proto.Unmarshal(data, template); err != nil {
			return status.Errorf(codes.InvalidArgument, "Failed to unmarshal message %s: %s", d, err)
		}
		return nil
	})
	if err != nil {
		return nil, util.StatusWrapf(err, "Failed to read message %s", d)
	}
	if len(missing) > 0 {
		return nil, status.Errorf(codes.NotFound, "Message %s not found", d)
	}
	return template, nil
}
