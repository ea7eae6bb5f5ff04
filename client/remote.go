package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"sync/atomic"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
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
	// batchLimit keeps batched requests well under gRPC's default
	// 4 MiB message limit; larger blobs go through ByteStream.
	batchLimit int64
}

// NewRemote creates a client for one instance name.
func NewRemote(conn grpc.ClientConnInterface, instanceName string, function digest.Function) *Remote {
	return &Remote{
		instanceName: instanceName,
		function:     function,
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
	all := map[digest.Digest]blob{}
	for d, data := range messages {
		all[d] = blob{digest: d, data: data}
	}
	for d, path := range files {
		if _, ok := all[d]; !ok {
			all[d] = blob{digest: d, path: path}
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
			return nil, fmt.Errorf("find missing blobs: %w", err)
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
		return nil, fmt.Errorf("%s changed while it was being uploaded", b.path)
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
		return fmt.Errorf("upload: %w", err)
	}
	for _, rr := range response.Responses {
		if rr.Status.GetCode() != int32(codes.OK) {
			return fmt.Errorf("upload %s/%d: %v", rr.Digest.GetHash(), rr.Digest.GetSizeBytes(), status.FromProto(rr.Status).Err())
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
	stream, err := r.byteStream.Write(ctx)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("uploads/%s/blobs/%s/%d", uuid.NewString(), b.digest.GetHashString(), b.digest.GetSizeBytes())
	if r.instanceName != "" {
		name = r.instanceName + "/" + name
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
		return fmt.Errorf("upload %s: %w", b.digest, err)
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
			return nil, err
		}
		if len(response.Responses) != 1 || response.Responses[0].Status.GetCode() != 0 {
			return nil, fmt.Errorf("read %s: %v", d, response.Responses)
		}
		data := response.Responses[0].Data
		if got := r.digestOf(data); got != d {
			return nil, fmt.Errorf("read %s: the data has digest %s", d, got)
		}
		return data, nil
	}
	name := fmt.Sprintf("blobs/%s/%d", d.GetHashString(), d.GetSizeBytes())
	if r.instanceName != "" {
		name = r.instanceName + "/" + name
	}
	stream, err := r.byteStream.Read(ctx, &bytestream.ReadRequest{ResourceName: name})
	if err != nil {
		return nil, err
	}
	data := make([]byte, 0, d.GetSizeBytes())
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", d, err)
		}
		data = append(data, chunk.Data...)
	}
	if got := r.digestOf(data); got != d {
		return nil, fmt.Errorf("read %s: the data has digest %s", d, got)
	}
	return data, nil
}

func (r *Remote) digestOf(data []byte) digest.Digest {
	generator := r.function.NewGenerator(int64(len(data)))
	generator.Write(data)
	return generator.Sum()
}
