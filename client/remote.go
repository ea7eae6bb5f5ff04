package client

import (
	"bytes"
	"context"
	"io"
	"os"
	"path"
	"sort"
	"sync/atomic"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Progress receives what the client is doing, for a person watching.
type Progress interface {
	Uploading(done, total int, doneBytes, totalBytes int64)
	Stage(stage remoteexecution.ExecutionStage_Value)
	Downloading(done, total int)
}

// Remote is a REAPI endpoint: `serve`, a Buildbarn frontend, or any
// other implementation.
type Remote struct {
	instanceName string
	function     digest.Function
	cas          remoteexecution.ContentAddressableStorageClient
	execution    remoteexecution.ExecutionClient
	byteStream   bytestream.ByteStreamClient
	// bareFunction is function without an instance name: bb-storage
	// writes the ByteStream paths of its digests as REAPI wants them
	// (naming the digest function where the hash length does not
	// tell it), and instanceName goes before them.
	bareFunction digest.Function
	// batchLimit keeps batched requests well under gRPC's default
	// 4 MiB message limit; larger blobs go through ByteStream.
	batchLimit int64
}

// NewRemote creates a client for one instance name.
func NewRemote(conn grpc.ClientConnInterface, instanceName string, function digest.Function) *Remote {
	bare, err := digest.EmptyInstanceName.GetDigestFunction(function.GetEnumValue(), 0)
	if err != nil {
		// function came from the same table: it cannot be unknown.
		panic(err)
	}
	return &Remote{
		instanceName: instanceName,
		function:     function,
		bareFunction: bare,
		cas:          remoteexecution.NewContentAddressableStorageClient(conn),
		execution:    remoteexecution.NewExecutionClient(conn),
		byteStream:   bytestream.NewByteStreamClient(conn),
		batchLimit:   2 << 20,
	}
}

// blob is something to upload: in memory or in a local file.
type blob struct {
	digest digest.Digest
	data   []byte
	path   string
}

// Upload stores whatever of the given blobs the CAS lacks, and only
// that: FindMissingBlobs first, then batches for small blobs and
// ByteStream for large ones.
func (r *Remote) Upload(ctx context.Context, messages map[digest.Digest][]byte, files map[digest.Digest]string, progress Progress) error {
	// Keyed in r's own function, as FindMissingBlobs answers: the
	// callers' digests may carry another instance name.
	all := map[digest.Digest]blob{}
	for d, data := range messages {
		own, err := r.own(d)
		if err != nil {
			return err
		}
		all[own] = blob{digest: own, data: data}
	}
	for d, path := range files {
		own, err := r.own(d)
		if err != nil {
			return err
		}
		if _, ok := all[own]; !ok {
			all[own] = blob{digest: own, path: path}
		}
	}
	digests := make([]digest.Digest, 0, len(all))
	for d := range all {
		digests = append(digests, d)
	}
	missing, err := r.findMissing(ctx, digests)
	if err != nil {
		return err
	}
	var totalBytes int64
	for _, d := range missing {
		totalBytes += d.GetSizeBytes()
	}
	var done atomic.Int64
	var doneBytes atomic.Int64
	report := func(n int, bytes int64) {
		progress.Uploading(int(done.Add(int64(n))), len(missing), doneBytes.Add(bytes), totalBytes)
	}
	report(0, 0)

	sort.Slice(missing, func(i, j int) bool { return missing[i].GetSizeBytes() < missing[j].GetSizeBytes() })
	group, ctx := errgroup.WithContext(ctx)
	group.SetLimit(4)
	var batch []blob
	var batchBytes int64
	flush := func() {
		pending := batch
		batch, batchBytes = nil, 0
		group.Go(func() error {
			if err := r.batchUpdate(ctx, pending); err != nil {
				return err
			}
			var bytes int64
			for _, b := range pending {
				bytes += b.digest.GetSizeBytes()
			}
			report(len(pending), bytes)
			return nil
		})
	}
	for _, d := range missing {
		b := all[d]
		if d.GetSizeBytes() > r.batchLimit/2 {
			group.Go(func() error {
				if err := r.write(ctx, b); err != nil {
					return err
				}
				report(1, d.GetSizeBytes())
				return nil
			})
			continue
		}
		if batchBytes+d.GetSizeBytes() > r.batchLimit || len(batch) >= 1000 {
			flush()
		}
		batch = append(batch, b)
		batchBytes += d.GetSizeBytes()
	}
	if len(batch) > 0 {
		flush()
	}
	return group.Wait()
}

func (r *Remote) findMissing(ctx context.Context, digests []digest.Digest) ([]digest.Digest, error) {
	var missing []digest.Digest
	for start := 0; start < len(digests); start += 10000 {
		end := min(start+10000, len(digests))
		request := &remoteexecution.FindMissingBlobsRequest{InstanceName: r.instanceName, DigestFunction: r.function.GetEnumValue()}
		for _, d := range digests[start:end] {
			request.BlobDigests = append(request.BlobDigests, d.GetProto())
		}
		response, err := r.cas.FindMissingBlobs(ctx, request)
		if err != nil {
			return nil, util.StatusWrap(err, "find missing blobs")
		}
		for _, m := range response.MissingBlobDigests {
			d, err := r.function.NewDigestFromProto(m)
			if err != nil {
				return nil, err
			}
			missing = append(missing, d)
		}
	}
	return missing, nil
}

func (b blob) read() ([]byte, error) {
	if b.data != nil || b.path == "" {
		return b.data, nil
	}
	data, err := os.ReadFile(b.path)
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != b.digest.GetSizeBytes() {
		return nil, status.Errorf(codes.FailedPrecondition, "%s changed while it was being uploaded: %d bytes, hashed as %d", b.path, len(data), b.digest.GetSizeBytes())
	}
	return data, nil
}

func (r *Remote) batchUpdate(ctx context.Context, blobs []blob) error {
	request := &remoteexecution.BatchUpdateBlobsRequest{InstanceName: r.instanceName, DigestFunction: r.function.GetEnumValue()}
	for _, b := range blobs {
		data, err := b.read()
		if err != nil {
			return err
		}
		request.Requests = append(request.Requests, &remoteexecution.BatchUpdateBlobsRequest_Request{Digest: b.digest.GetProto(), Data: data})
	}
	response, err := r.cas.BatchUpdateBlobs(ctx, request)
	if err != nil {
		return util.StatusWrap(err, "upload")
	}
	for _, rr := range response.Responses {
		if rr.Status.GetCode() != int32(codes.OK) {
			return util.StatusWrapf(status.ErrorProto(rr.Status), "upload %s/%d", rr.Digest.GetHash(), rr.Digest.GetSizeBytes())
		}
	}
	return nil
}

// write streams one large blob through ByteStream.
func (r *Remote) write(ctx context.Context, b blob) error {
	var reader io.Reader
	if b.data != nil {
		reader = bytes.NewReader(b.data)
	} else {
		f, err := os.Open(b.path)
		if err != nil {
			return err
		}
		defer f.Close()
		reader = f
	}
	bare, err := r.bare(b.digest)
	if err != nil {
		return err
	}
	name := path.Join(r.instanceName, bare.GetByteStreamWritePath(uuid.New(), remoteexecution.Compressor_IDENTITY))
	stream, err := r.byteStream.Write(ctx)
	if err != nil {
		return util.StatusWrapf(err, "upload %s", b.digest)
	}
	buf := make([]byte, 1<<20)
	var offset int64
	for {
		n, err := io.ReadFull(reader, buf)
		last := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !last {
			return err
		}
		request := &bytestream.WriteRequest{WriteOffset: offset, Data: buf[:n], FinishWrite: last || offset+int64(n) == b.digest.GetSizeBytes()}
		if offset == 0 {
			request.ResourceName = name
		}
		if err := stream.Send(request); err != nil && err != io.EOF {
			return err
		}
		offset += int64(n)
		if request.FinishWrite {
			break
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return util.StatusWrapf(err, "upload %s", b.digest)
	}
	return nil
}

// Read fetches one blob whole.
func (r *Remote) Read(ctx context.Context, d digest.Digest) ([]byte, error) {
	if d.GetSizeBytes() == 0 {
		return nil, nil
	}
	if d.GetSizeBytes() <= r.batchLimit/2 {
		response, err := r.cas.BatchReadBlobs(ctx, &remoteexecution.BatchReadBlobsRequest{
			InstanceName: r.instanceName, Digests: []*remoteexecution.Digest{d.GetProto()}, DigestFunction: r.function.GetEnumValue(),
		})
		if err != nil {
			return nil, util.StatusWrapf(err, "read %s", d)
		}
		if len(response.Responses) != 1 {
			return nil, status.Errorf(codes.Internal, "read %s: %d responses to a request for one blob", d, len(response.Responses))
		}
		if st := response.Responses[0].Status; st.GetCode() != int32(codes.OK) {
			return nil, util.StatusWrapf(status.ErrorProto(st), "read %s", d)
		}
		data := response.Responses[0].Data
		if got := r.digestOf(data); got.GetHashString() != d.GetHashString() || got.GetSizeBytes() != d.GetSizeBytes() {
			return nil, status.Errorf(codes.DataLoss, "read %s: the data has digest %s", d, got)
		}
		return data, nil
	}
	bare, err := r.bare(d)
	if err != nil {
		return nil, err
	}
	data := make([]byte, 0, d.GetSizeBytes())
	err = r.ReadResource(ctx, path.Join(r.instanceName, bare.GetByteStreamReadPath(remoteexecution.Compressor_IDENTITY)), 0, func(chunk []byte) error {
		data = append(data, chunk...)
		return nil
	})
	if err != nil {
		return nil, util.StatusWrapf(err, "read %s", d)
	}
	if got := r.digestOf(data); got.GetHashString() != d.GetHashString() || got.GetSizeBytes() != d.GetSizeBytes() {
		return nil, status.Errorf(codes.DataLoss, "read %s: the data has digest %s", d, got)
	}
	return data, nil
}

// ReadResource reads a ByteStream resource from offset to its end,
// passing each chunk to chunk as it arrives: a blob, or an action's
// live log. The error is the stream's status, or chunk's error.
func (r *Remote) ReadResource(ctx context.Context, name string, offset int64, chunk func([]byte) error) error {
	stream, err := r.byteStream.Read(ctx, &bytestream.ReadRequest{ResourceName: name, ReadOffset: offset})
	if err != nil {
		return err
	}
	for {
		response, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := chunk(response.Data); err != nil {
			return err
		}
	}
}

// own is d in r's function.
func (r *Remote) own(d digest.Digest) (digest.Digest, error) {
	own, err := r.function.NewDigestFromProto(d.GetProto())
	if err != nil {
		return digest.BadDigest, util.StatusWrapf(err, "blob %s", d)
	}
	return own, nil
}

// bare is d in bareFunction, for its ByteStream path.
func (r *Remote) bare(d digest.Digest) (digest.Digest, error) {
	return r.bareFunction.NewDigestFromProto(d.GetProto())
}

func (r *Remote) digestOf(data []byte) digest.Digest {
	generator := r.function.NewGenerator(int64(len(data)))
	generator.Write(data)
	return generator.Sum()
}
