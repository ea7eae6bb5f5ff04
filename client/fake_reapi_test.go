package client

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/genproto/googleapis/longrunning"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// script is what the fake Execution service sends on one stream: the
// operations in order, then end (nil: a clean end of the stream).
type script struct {
	ops []*longrunning.Operation
	end error
}

// fakeREAPI is an in-memory CAS, ByteStream and Execution service: just
// enough REAPI to drive Remote without a worker. Execute plays the
// script of the action's hash; WaitExecution the one of the name.
type fakeREAPI struct {
	remoteexecution.UnimplementedExecutionServer
	remoteexecution.UnimplementedContentAddressableStorageServer
	bytestream.UnimplementedByteStreamServer

	mu       sync.Mutex
	blobs    map[string][]byte
	scripts  map[string]script
	waits    map[string]script
	executes []*remoteexecution.ExecuteRequest
	waited   []string
	// batched and streamed are the hashes written each way.
	batched, streamed []string
	findMissingCalls  int
	// resources are the ByteStream names read and written.
	resources []string
	// corrupt makes reads return other bytes than the digest says.
	corrupt bool
}

func newFakeREAPI() *fakeREAPI {
	return &fakeREAPI{blobs: map[string][]byte{}, scripts: map[string]script{}, waits: map[string]script{}}
}

// dial serves f on an in-memory listener and returns a Remote on it.
func (f *fakeREAPI) dial(t *testing.T, instanceName string) *Remote {
	t.Helper()
	return f.dialIn(t, digest.MustNewFunction(instanceName, remoteexecution.DigestFunction_SHA256))
}

// dialIn is dial for function's instance name and digest function.
func (f *fakeREAPI) dialIn(t *testing.T, function digest.Function) *Remote {
	t.Helper()
	return NewRemote(serveInMemory(t, f), function.GetInstanceName().String(), function)
}

// reapiServer is what the package's fakes serve.
type reapiServer interface {
	remoteexecution.ExecutionServer
	remoteexecution.ContentAddressableStorageServer
	bytestream.ByteStreamServer
}

// serveInMemory serves fake on an in-memory listener, both stopped
// when t ends, and returns a connection to it.
func serveInMemory(t *testing.T, fake reapiServer) *grpc.ClientConn {
	t.Helper()
	listener := bufconn.Listen(1 << 20)
	server := grpc.NewServer()
	remoteexecution.RegisterExecutionServer(server, fake)
	remoteexecution.RegisterContentAddressableStorageServer(server, fake)
	bytestream.RegisterByteStreamServer(server, fake)
	go server.Serve(listener)
	t.Cleanup(server.Stop)
	conn, err := grpc.NewClient("passthrough:///fake", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return listener.Dial() }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (f *fakeREAPI) play(s script, send func(*longrunning.Operation) error) error {
	for _, op := range s.ops {
		if err := send(op); err != nil {
			return err
		}
	}
	return s.end
}

func (f *fakeREAPI) Execute(request *remoteexecution.ExecuteRequest, stream remoteexecution.Execution_ExecuteServer) error {
	f.mu.Lock()
	f.executes = append(f.executes, request)
	s, ok := f.scripts[request.ActionDigest.GetHash()]
	f.mu.Unlock()
	if !ok {
		return status.Errorf(codes.FailedPrecondition, "action %s is not in the fake's scripts", request.ActionDigest.GetHash())
	}
	return f.play(s, stream.Send)
}

func (f *fakeREAPI) WaitExecution(request *remoteexecution.WaitExecutionRequest, stream remoteexecution.Execution_WaitExecutionServer) error {
	f.mu.Lock()
	f.waited = append(f.waited, request.Name)
	s, ok := f.waits[request.Name]
	f.mu.Unlock()
	if !ok {
		return status.Errorf(codes.NotFound, "operation %q", request.Name)
	}
	return f.play(s, stream.Send)
}

func (f *fakeREAPI) FindMissingBlobs(ctx context.Context, request *remoteexecution.FindMissingBlobsRequest) (*remoteexecution.FindMissingBlobsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.findMissingCalls++
	response := &remoteexecution.FindMissingBlobsResponse{}
	for _, d := range request.BlobDigests {
		if _, ok := f.blobs[d.Hash]; !ok {
			response.MissingBlobDigests = append(response.MissingBlobDigests, d)
		}
	}
	return response, nil
}

func (f *fakeREAPI) BatchUpdateBlobs(ctx context.Context, request *remoteexecution.BatchUpdateBlobsRequest) (*remoteexecution.BatchUpdateBlobsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	response := &remoteexecution.BatchUpdateBlobsResponse{}
	for _, r := range request.Requests {
		st := status.New(codes.OK, "")
		if got := hashIn(request.DigestFunction, r.Data); got != r.Digest.Hash {
			st = status.Newf(codes.InvalidArgument, "blob %s has digest %s", r.Digest.Hash, got)
		} else {
			f.blobs[r.Digest.Hash] = r.Data
			f.batched = append(f.batched, r.Digest.Hash)
		}
		response.Responses = append(response.Responses, &remoteexecution.BatchUpdateBlobsResponse_Response{Digest: r.Digest, Status: st.Proto()})
	}
	return response, nil
}

func (f *fakeREAPI) BatchReadBlobs(ctx context.Context, request *remoteexecution.BatchReadBlobsRequest) (*remoteexecution.BatchReadBlobsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	response := &remoteexecution.BatchReadBlobsResponse{}
	for _, d := range request.Digests {
		data, ok := f.blobs[d.Hash]
		st := status.New(codes.OK, "")
		if !ok {
			st = status.Newf(codes.NotFound, "blob %s", d.Hash)
		}
		if f.corrupt {
			data = corrupted(data)
		}
		response.Responses = append(response.Responses, &remoteexecution.BatchReadBlobsResponse_Response{Digest: d, Data: data, Status: st.Proto()})
	}
	return response, nil
}

func (f *fakeREAPI) Read(request *bytestream.ReadRequest, stream bytestream.ByteStream_ReadServer) error {
	// Parsed as Buildbarn parses it.
	d, _, err := digest.NewDigestFromByteStreamReadPath(request.ResourceName)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.resources = append(f.resources, request.ResourceName)
	data, ok := f.blobs[d.GetHashString()]
	corrupt := f.corrupt
	f.mu.Unlock()
	if !ok {
		return status.Errorf(codes.NotFound, "blob %s", d)
	}
	if corrupt {
		data = corrupted(data)
	}
	// Two chunks, as a real server sends large blobs in pieces.
	half := len(data) / 2
	for _, chunk := range [][]byte{data[:half], data[half:]} {
		if err := stream.Send(&bytestream.ReadResponse{Data: chunk}); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeREAPI) Write(stream bytestream.ByteStream_WriteServer) error {
	var name string
	var data []byte
	for {
		request, err := stream.Recv()
		if err == io.EOF {
			return status.Error(codes.InvalidArgument, "the write ended without finish_write")
		}
		if err != nil {
			return err
		}
		if name == "" {
			name = request.ResourceName
		}
		if request.WriteOffset != int64(len(data)) {
			return status.Errorf(codes.InvalidArgument, "write offset %d, have %d bytes", request.WriteOffset, len(data))
		}
		data = append(data, request.Data...)
		if request.FinishWrite {
			break
		}
	}
	d, _, err := digest.NewDigestFromByteStreamWritePath(name)
	if err != nil {
		return err
	}
	hash := d.GetHashString()
	if got := hashIn(d.GetDigestFunction().GetEnumValue(), data); got != hash || int64(len(data)) != d.GetSizeBytes() {
		return status.Errorf(codes.InvalidArgument, "wrote %d bytes with digest %s to %q", len(data), got, name)
	}
	f.mu.Lock()
	f.resources = append(f.resources, name)
	f.blobs[hash] = data
	f.streamed = append(f.streamed, hash)
	f.mu.Unlock()
	return stream.SendAndClose(&bytestream.WriteResponse{CommittedSize: int64(len(data))})
}

var fakeFunction = digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)

// corrupted is data with its first byte changed.
func corrupted(data []byte) []byte {
	c := append([]byte{}, data...)
	c[0] ^= 1
	return c
}

// hashIn is data's hash in fn (SHA-256 when unset).
func hashIn(fn remoteexecution.DigestFunction_Value, data []byte) string {
	if fn == remoteexecution.DigestFunction_UNKNOWN {
		fn = remoteexecution.DigestFunction_SHA256
	}
	generator := digest.MustNewFunction("", fn).NewGenerator(int64(len(data)))
	generator.Write(data)
	return generator.Sum().GetHashString()
}

func digestOfBytes(data []byte) *remoteexecution.Digest { return sha256Digest(data) }

// operation builds one Operation update: stage in its metadata, and
// when done is set a response (result not nil) or opErr.
func operation(t *testing.T, name string, stage remoteexecution.ExecutionStage_Value, done bool, result *remoteexecution.ActionResult, opErr *status.Status) *longrunning.Operation {
	t.Helper()
	metadata, err := anypb.New(&remoteexecution.ExecuteOperationMetadata{Stage: stage})
	if err != nil {
		t.Fatal(err)
	}
	op := &longrunning.Operation{Name: name, Metadata: metadata, Done: done}
	switch {
	case opErr != nil:
		op.Result = &longrunning.Operation_Error{Error: opErr.Proto()}
	case result != nil:
		response, err := anypb.New(&remoteexecution.ExecuteResponse{Result: result})
		if err != nil {
			t.Fatal(err)
		}
		op.Result = &longrunning.Operation_Response{Response: response}
	}
	return op
}

// blobDigest is data's SHA-256 digest as Remote takes it.
func blobDigest(t *testing.T, data []byte) digest.Digest {
	t.Helper()
	d, err := fakeFunction.NewDigestFromProto(digestOfBytes(data))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// recordedProgress keeps what Remote reported.
type recordedProgress struct {
	mu     sync.Mutex
	stages []remoteexecution.ExecutionStage_Value
	// uploaded is the last Uploading call's done and total.
	uploaded [2]int
}

func (p *recordedProgress) Uploading(done, total int, _, _ int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.uploaded = [2]int{done, total}
}

func (p *recordedProgress) Stage(s remoteexecution.ExecutionStage_Value) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stages = append(p.stages, s)
}

func (p *recordedProgress) Downloading(int, int) {}

// equalMessages compares two lists of protos.
func equalMessages[M proto.Message](a, b []M) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
