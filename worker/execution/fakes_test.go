package execution

import (
	"context"
	"sync"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var testFunction = digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)

func digestOfBytes(data []byte) digest.Digest {
	g := testFunction.NewGenerator(int64(len(data)))
	g.Write(data)
	return g.Sum()
}

// memoryActionCache is an Action Cache in a map: Get and Put are all
// the Execution service uses.
type memoryActionCache struct {
	blobstore.BlobAccess
	mu      sync.Mutex
	results map[digest.Digest][]byte
}

func newMemoryActionCache() *memoryActionCache {
	return &memoryActionCache{results: map[digest.Digest][]byte{}}
}

func (c *memoryActionCache) Get(_ context.Context, d digest.Digest) buffer.Buffer {
	c.mu.Lock()
	defer c.mu.Unlock()
	data, ok := c.results[d]
	if !ok {
		return buffer.NewBufferFromError(status.Errorf(codes.NotFound, "%s not in the Action Cache", d))
	}
	return buffer.NewProtoBufferFromByteSlice(&remoteexecution.ActionResult{}, data, buffer.BackendProvided(buffer.Irreparable(d)))
}

func (c *memoryActionCache) Put(_ context.Context, d digest.Digest, b buffer.Buffer) error {
	data, err := b.ToByteSlice(1 << 20)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.results[d] = data
	return nil
}

// fakeRecorder records the responses of the actions it is told of.
type fakeRecorder struct {
	worker.ActionRecording
	started   []*worker.Request
	responses []*remoteexecution.ExecuteResponse
}

func (r *fakeRecorder) ActionStarted(request *worker.Request) worker.ActionRecording {
	r.started = append(r.started, request)
	return r
}

func (r *fakeRecorder) ActionCompleted(response *remoteexecution.ExecuteResponse) {
	r.responses = append(r.responses, response)
}
