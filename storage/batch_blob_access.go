package storage

import (
	"context"
	"io"
	"sync"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/internal/parallel"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// batchBlobAccess moves many small CAS blobs in one round trip.
// bb-storage's gRPC CAS client only uses ByteStream, which costs a
// stream per blob; trees of small sources are dominated by that.
type batchBlobAccess interface {
	// BatchRead reads the given blobs (one instance name, one digest
	// function, total size within the message limit). found receives
	// the data of every blob the server returned; missing are the
	// ones it does not have. Data is not yet validated.
	BatchRead(ctx context.Context, digests []digest.Digest) (found map[digest.Digest][]byte, missing []digest.Digest, err error)
	// BatchUpdate stores the given blobs, same constraints.
	BatchUpdate(ctx context.Context, blobs map[digest.Digest][]byte) error
}

// batchOverheadBytes leaves room for the per-blob digest and status
// fields and the request envelope within the message size limit.
const batchOverheadBytes = 256

type grpcBatchBlobAccess struct {
	client                  remoteexecution.ContentAddressableStorageClient
	maximumMessageSizeBytes int
}

func newGRPCBatchBlobAccess(conn grpc.ClientConnInterface, maximumMessageSizeBytes int) batchBlobAccess {
	return &grpcBatchBlobAccess{
		client:                  remoteexecution.NewContentAddressableStorageClient(conn),
		maximumMessageSizeBytes: maximumMessageSizeBytes,
	}
}

func (ba *grpcBatchBlobAccess) BatchRead(ctx context.Context, digests []digest.Digest) (map[digest.Digest][]byte, []digest.Digest, error) {
	if len(digests) == 0 {
		return nil, nil, nil
	}
	request := &remoteexecution.BatchReadBlobsRequest{
		InstanceName:   digests[0].GetInstanceName().String(),
		DigestFunction: digests[0].GetDigestFunction().GetEnumValue(),
	}
	byKey := make(map[string]digest.Digest, len(digests))
	for _, d := range digests {
		request.Digests = append(request.Digests, d.GetProto())
		byKey[d.GetKey(digest.KeyWithoutInstance)] = d
	}
	response, err := ba.client.BatchReadBlobs(ctx, request, grpc.MaxCallRecvMsgSize(ba.maximumMessageSizeBytes+len(digests)*batchOverheadBytes))
	if err != nil {
		return nil, nil, util.StatusWrap(err, "BatchReadBlobs failed")
	}
	function := digests[0].GetDigestFunction()
	found := make(map[digest.Digest][]byte, len(digests))
	var missing []digest.Digest
	for _, r := range response.Responses {
		d, err := function.NewDigestFromProto(r.Digest)
		if err != nil {
			return nil, nil, util.StatusWrapWithCode(err, codes.Internal, "BatchReadBlobs returned an invalid digest")
		}
		if _, ok := byKey[d.GetKey(digest.KeyWithoutInstance)]; !ok {
			return nil, nil, status.Errorf(codes.Internal, "BatchReadBlobs returned unrequested digest %s", d)
		}
		switch code := codes.Code(r.GetStatus().GetCode()); code {
		case codes.OK:
			found[d] = r.Data
		case codes.NotFound:
			missing = append(missing, d)
		default:
			return nil, nil, status.Errorf(code, "BatchReadBlobs: blob %s: %s", d, r.GetStatus().GetMessage())
		}
	}
	return found, missing, nil
}

func (ba *grpcBatchBlobAccess) BatchUpdate(ctx context.Context, blobs map[digest.Digest][]byte) error {
	request := &remoteexecution.BatchUpdateBlobsRequest{}
	for d, data := range blobs {
		request.InstanceName = d.GetInstanceName().String()
		request.DigestFunction = d.GetDigestFunction().GetEnumValue()
		request.Requests = append(request.Requests, &remoteexecution.BatchUpdateBlobsRequest_Request{Digest: d.GetProto(), Data: data})
	}
	if len(request.Requests) == 0 {
		return nil
	}
	response, err := ba.client.BatchUpdateBlobs(ctx, request, grpc.MaxCallSendMsgSize(ba.maximumMessageSizeBytes+len(blobs)*batchOverheadBytes))
	if err != nil {
		return util.StatusWrap(err, "BatchUpdateBlobs failed")
	}
	for _, r := range response.Responses {
		if code := codes.Code(r.GetStatus().GetCode()); code != codes.OK {
			return status.Errorf(code, "BatchUpdateBlobs: blob %s/%d: %s", r.GetDigest().GetHash(), r.GetDigest().GetSizeBytes(), r.GetStatus().GetMessage())
		}
	}
	return nil
}

// Batched reports whether small blobs travel in batches (remote
// storage). Local storage reads and writes each blob directly, so a
// caller has nothing to gain from reading a file into memory first.
func (s *Storage) Batched() bool {
	return s.batch != nil
}

// ReadBlobInto streams a blob of any size into w, validated against
// its digest as it goes.
func (s *Storage) ReadBlobInto(ctx context.Context, d digest.Digest, w io.Writer) error {
	if err := s.ContentAddressableStorage.Get(ctx, d).IntoWriter(w); err != nil {
		return err
	}
	addBytesFetched(int(d.GetSizeBytes()))
	return nil
}

// PutBlob stores one blob in the CAS.
func (s *Storage) PutBlob(ctx context.Context, d digest.Digest, b buffer.Buffer) error {
	if err := s.ContentAddressableStorage.Put(ctx, d, b); err != nil {
		return err
	}
	addBytesUploaded(int(d.GetSizeBytes()))
	return nil
}

// SmallBlobSizeBytes is the size up to which a blob is read or written
// as part of a batch rather than streamed on its own.
func (s *Storage) SmallBlobSizeBytes() int64 {
	return int64(s.MaximumMessageSizeBytes / 16)
}

// ReadSmallBlobs fetches blobs no larger than SmallBlobSizeBytes,
// calling fn with validated content for each one present, and returns
// the ones storage does not have. fn may be called concurrently from
// different goroutines only if the caller calls ReadSmallBlobs
// concurrently; one call invokes fn sequentially.
func (s *Storage) ReadSmallBlobs(ctx context.Context, digests []digest.Digest, fn func(d digest.Digest, data []byte) error) ([]digest.Digest, error) {
	var missing []digest.Digest
	// REAPI: the empty blob is always present, whether stored or not.
	nonEmpty := digests[:0:0]
	for _, d := range digests {
		if d.GetSizeBytes() == 0 {
			if err := fn(d, nil); err != nil {
				return nil, err
			}
		} else {
			nonEmpty = append(nonEmpty, d)
		}
	}
	digests = nonEmpty
	if s.batch == nil {
		// Local storage: a direct read is as cheap as it gets.
		for _, d := range digests {
			data, err := s.ContentAddressableStorage.Get(ctx, d).ToByteSlice(int(d.GetSizeBytes()))
			if status.Code(err) == codes.NotFound {
				missing = append(missing, d)
				continue
			} else if err != nil {
				return nil, util.StatusWrapf(err, "Failed to read blob %s", d)
			}
			addBytesFetched(len(data))
			if err := fn(d, data); err != nil {
				return nil, err
			}
		}
		return missing, nil
	}
	limit := int64(s.MaximumMessageSizeBytes)
	for start := 0; start < len(digests); {
		end, total := start, int64(0)
		for end < len(digests) && (end == start || total+digests[end].GetSizeBytes()+batchOverheadBytes <= limit) {
			total += digests[end].GetSizeBytes() + batchOverheadBytes
			end++
		}
		found, m, err := s.batch.BatchRead(ctx, digests[start:end])
		if err != nil {
			return nil, err
		}
		missing = append(missing, m...)
		for _, d := range digests[start:end] {
			raw, ok := found[d]
			if !ok {
				continue
			}
			// Validate against the digest before anything uses it.
			data, err := buffer.NewCASBufferFromByteSlice(d, raw, buffer.BackendProvided(buffer.Irreparable(d))).ToByteSlice(len(raw))
			if err != nil {
				return nil, util.StatusWrapf(err, "Blob %s", d)
			}
			addBytesFetched(len(data))
			if err := fn(d, data); err != nil {
				return nil, err
			}
		}
		start = end
	}
	return missing, nil
}

// WriteSmallBlobs stores blobs no larger than SmallBlobSizeBytes whose
// content the caller has already hashed.
func (s *Storage) WriteSmallBlobs(ctx context.Context, blobs map[digest.Digest][]byte) error {
	if s.batch == nil {
		for d, data := range blobs {
			if err := s.ContentAddressableStorage.Put(ctx, d, buffer.NewValidatedBufferFromByteSlice(data)); err != nil {
				return util.StatusWrapf(err, "Failed to store blob %s", d)
			}
			addBytesUploaded(len(data))
		}
		return nil
	}
	limit := int64(s.MaximumMessageSizeBytes)
	batch := map[digest.Digest][]byte{}
	var total int64
	flush := func() error {
		err := s.batch.BatchUpdate(ctx, batch)
		for _, data := range batch {
			addBytesUploaded(len(data))
		}
		batch, total = map[digest.Digest][]byte{}, 0
		return err
	}
	for d, data := range blobs {
		size := int64(len(data)) + batchOverheadBytes
		if len(batch) > 0 && total+size > limit {
			if err := flush(); err != nil {
				return err
			}
		}
		batch[d] = data
		total += size
	}
	if len(batch) > 0 {
		return flush()
	}
	return nil
}

// FetchBlobs reads the given blobs with at most parallelism requests in
// flight: small ones in batches, large ones (up to maxSizeBytes) one
// at a time. fn receives validated data and may be called
// concurrently. Blobs storage does not have are returned.
func (s *Storage) FetchBlobs(ctx context.Context, digests []digest.Digest, parallelism, maxSizeBytes int, fn func(d digest.Digest, data []byte) error) ([]digest.Digest, error) {
	small, large := s.PartitionBySize(digests)
	var mu sync.Mutex
	var missing []digest.Digest
	err := parallel.Run(ctx, parallelism, len(small)+len(large), func(ctx context.Context, i int) error {
		if i < len(small) {
			m, err := s.ReadSmallBlobs(ctx, small[i], fn)
			mu.Lock()
			missing = append(missing, m...)
			mu.Unlock()
			return err
		}
		d := large[i-len(small)]
		data, err := s.ContentAddressableStorage.Get(ctx, d).ToByteSlice(maxSizeBytes)
		if status.Code(err) == codes.NotFound {
			mu.Lock()
			missing = append(missing, d)
			mu.Unlock()
			return nil
		} else if err != nil {
			return util.StatusWrapf(err, "Failed to read blob %s", d)
		}
		addBytesFetched(len(data))
		return fn(d, data)
	})
	return missing, err
}

// PartitionBySize groups small blobs into batches that fit one request
// and returns large ones separately.
func (s *Storage) PartitionBySize(digests []digest.Digest) ([][]digest.Digest, []digest.Digest) {
	var batches [][]digest.Digest
	var large, current []digest.Digest
	var total int64
	// Local reads have no request to fill; small groups still amortise
	// goroutine hand-offs.
	maxCount := 64
	if s.batch != nil {
		maxCount = 1 << 30
	}
	for _, d := range digests {
		size := d.GetSizeBytes()
		if size > s.SmallBlobSizeBytes() {
			large = append(large, d)
			continue
		}
		if len(current) > 0 && (total+size+batchOverheadBytes > int64(s.MaximumMessageSizeBytes) || len(current) >= maxCount) {
			batches = append(batches, current)
			current, total = nil, 0
		}
		current = append(current, d)
		total += size + batchOverheadBytes
	}
	if len(current) > 0 {
		batches = append(batches, current)
	}
	return batches, large
}
