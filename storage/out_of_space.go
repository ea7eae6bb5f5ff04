package cas

import (
	"context"
	"strings"
	"syscall"

	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type outOfSpaceReportingBlobAccess struct {
	blobstore.BlobAccess
}

// newOutOfSpaceReportingBlobAccess reports a write that failed for a
// full disk (or quota) as RESOURCE_EXHAUSTED: bb-storage's local store
// passes the errno on as UNKNOWN, which tells a client nothing it can
// act on.
func newOutOfSpaceReportingBlobAccess(base blobstore.BlobAccess) blobstore.BlobAccess {
	return &outOfSpaceReportingBlobAccess{BlobAccess: base}
}

func (ba *outOfSpaceReportingBlobAccess) Put(ctx context.Context, d digest.Digest, b buffer.Buffer) error {
	err := ba.BlobAccess.Put(ctx, d, b)
	if err != nil && IsOutOfSpace(err) {
		return util.StatusWrapWithCode(err, codes.ResourceExhausted, "The storage is out of disk space")
	}
	return err
}

// IsOutOfSpace recognises a full disk or an exhausted quota under the
// layers of wrapping between the syscall and the caller (bb-storage and
// the caches turn errnos into statuses that keep only the message).
func IsOutOfSpace(err error) bool {
	if err == nil {
		return false
	}
	message := status.Convert(err).Message()
	return strings.Contains(message, syscall.ENOSPC.Error()) || strings.Contains(message, syscall.EDQUOT.Error())
}
