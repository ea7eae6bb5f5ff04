package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/genproto/googleapis/longrunning"
	"google.golang.org/protobuf/types/known/anypb"
)

// fakeServer answers Execute with one EXECUTING update (naming live
// logs or not) and the result; its live stdout holds only a prefix of
// the final log, as when the action ends while a client follows it.
type fakeServer struct {
	remoteexecution.UnimplementedExecutionServer
	remoteexecution.UnimplementedContentAddressableStorageServer
	bytestream.UnimplementedByteStreamServer
	nameStreams bool
	stdout      []byte
	liveStdout  []byte
	mu          sync.Mutex
	reads       []string
	readDone    chan struct{}
}

func sha256Digest(data []byte) *remoteexecution.Digest {
	sum := sha256.Sum256(data)
	return &remoteexecution.Digest{Hash: hex.EncodeToString(sum[:]), SizeBytes: int64(len(data))}
}

func (f *fakeServer) Execute(request *remoteexecution.ExecuteRequest, stream remoteexecution.Execution_ExecuteServer) error {
	metadata := &remoteexecution.ExecuteOperationMetadata{Stage: remoteexecution.ExecutionStage_EXECUTING}
	if f.nameStreams {
		metadata.StdoutStreamName, metadata.StderrStreamName = "live/stdout", "live/stderr"
	}
	m, _ := anypb.New(metadata)
	if err := stream.Send(&longrunning.Operation{Name: "op", Metadata: m}); err != nil {
		return err
	}
	// The client reads the live logs before the operation
	// completes (a client that does not fails the test's check).
	timeout := time.After(10 * time.Second)
	for i := 0; f.nameStreams && i < 2; i++ {
		select {
		case <-f.readDone:
		case <-timeout:
			i = 2
		}
	}
	response, _ := anypb.New(&remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{
		StdoutDigest: sha256Digest(f.stdout),
		StderrRaw:    []byte("inline stderr\n"),
	}})
	done, _ := anypb.New(&remoteexecution.ExecuteOperationMetadata{Stage: remoteexecution.ExecutionStage_COMPLETED})
	return stream.Send(&longrunning.Operation{Name: "op", Metadata: done, Done: true, Result: &longrunning.Operation_Response{Response: response}})
}

func (f *fakeServer) Read(request *bytestream.ReadRequest, stream bytestream.ByteStream_ReadServer) error {
	defer func() {
		f.mu.Lock()
		f.reads = append(f.reads, request.ResourceName)
		f.mu.Unlock()
		f.readDone <- struct{}{}
	}()
	if request.ResourceName == "live/stdout" {
		return stream.Send(&bytestream.ReadResponse{Data: f.liveStdout})
	}
	return nil
}

func (f *fakeServer) BatchReadBlobs(ctx context.Context, request *remoteexecution.BatchReadBlobsRequest) (*remoteexecution.BatchReadBlobsResponse, error) {
	return &remoteexecution.BatchReadBlobsResponse{Responses: []*remoteexecution.BatchReadBlobsResponse_Response{
		{Digest: request.Digests[0], Data: f.stdout, Status: nil},
	}}, nil
}

type noProgress struct{}

func (noProgress) Uploading(int, int, int64, int64)           {}
func (noProgress) Stage(remoteexecution.ExecutionStage_Value) {}
func (noProgress) Downloading(int, int)                       {}

func runFake(t *testing.T, f *fakeServer) (string, string) {
	t.Helper()
	f.readDone = make(chan struct{}, 2)
	conn := serveInMemory(t, f)
	function := digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)
	action, err := function.NewDigest(sha256Digest(nil).Hash, 0)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	response, err := NewRemote(conn, "", function).ExecuteShowingLogs(context.Background(), action, false, noProgress{}, &stdout, &stderr)
	if err != nil || response.Result == nil {
		t.Fatalf("%v, %v", response, err)
	}
	return stdout.String(), stderr.String()
}

func TestExecuteShowingLogsWritesEachByteOnce(t *testing.T) {
	f := &fakeServer{nameStreams: true, stdout: []byte("line 1\nline 2\n"), liveStdout: []byte("line 1\n")}
	stdout, stderr := runFake(t, f)
	if stdout != "line 1\nline 2\n" || stderr != "inline stderr\n" {
		t.Fatalf("stdout %q, stderr %q", stdout, stderr)
	}
	if len(f.reads) != 2 {
		t.Fatalf("live logs read: %q", f.reads)
	}
}

func TestExecuteShowingLogsWithoutStreamNamesShowsTheResult(t *testing.T) {
	f := &fakeServer{stdout: []byte("all at the end\n")}
	stdout, stderr := runFake(t, f)
	if stdout != "all at the end\n" || stderr != "inline stderr\n" {
		t.Fatalf("stdout %q, stderr %q", stdout, stderr)
	}
	if len(f.reads) != 0 {
		t.Fatalf("live logs read without names: %q", f.reads)
	}
}
