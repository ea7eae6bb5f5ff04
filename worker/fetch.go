package worker

import (
	"context"

	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// fetchMessage reads a proto from the CAS. A blob that is not there is
// the MISSING precondition failure REAPI prescribes, so that the client
// uploads it and retries.
func fetchMessage[M proto.Message](ctx context.Context, cas *storage.Storage, d digest.Digest, template M) (M, error) {
	// ToProto may return a message other than its template (a buffer
	// made from a message returns that message), so use its result.
	m, err := cas.ContentAddressableStorage.Get(ctx, d).ToProto(template, cas.MaximumMessageSizeBytes)
	if status.Code(err) == codes.NotFound {
		return template, storage.MissingBlobsError([]digest.Digest{d})
	} else if err != nil {
		return template, err
	}
	return m.(M), nil
}
