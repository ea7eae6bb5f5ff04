package statuspage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// memoryCAS is the part of a BlobAccess the page uses: Get.
type memoryCAS struct {
	blobstore.BlobAccess
	mu    sync.Mutex
	blobs map[string][]byte
}

func newMemoryCAS() *memoryCAS { return &memoryCAS{blobs: map[string][]byte{}} }

func (c *memoryCAS) Get(ctx context.Context, d digest.Digest) buffer.Buffer {
	c.mu.Lock()
	defer c.mu.Unlock()
	data, ok := c.blobs[d.GetHashString()]
	if !ok {
		return buffer.NewBufferFromError(status.Errorf(codes.NotFound, "Blob %s not found", d))
	}
	return buffer.NewValidatedBufferFromByteSlice(data)
}

func (c *memoryCAS) put(data []byte) *remoteexecution.Digest {
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	c.mu.Lock()
	c.blobs[hash] = data
	c.mu.Unlock()
	return &remoteexecution.Digest{Hash: hash, SizeBytes: int64(len(data))}
}

func (c *memoryCAS) putMessage(m proto.Message) *remoteexecution.Digest {
	data, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return c.put(data)
}

func testRequest(t testing.TB, d *remoteexecution.Digest, metadata *remoteexecution.RequestMetadata) *worker.Request {
	t.Helper()
	function := digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)
	actionDigest, err := function.NewDigestFromProto(d)
	if err != nil {
		t.Fatal(err)
	}
	return &worker.Request{InstanceName: digest.EmptyInstanceName, DigestFunction: function, ActionDigest: actionDigest, RequestMetadata: metadata}
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// metadataTaking returns ExecutedActionMetadata in which each stage
// took the given time, starting at start.
func metadataTaking(start time.Time, queued, fetch, run, upload time.Duration) *remoteexecution.ExecutedActionMetadata {
	t := start
	next := func(d time.Duration) *timestamppb.Timestamp {
		t = t.Add(d)
		return timestamppb.New(t)
	}
	m := &remoteexecution.ExecutedActionMetadata{QueuedTimestamp: timestamppb.New(start)}
	m.WorkerStartTimestamp = next(queued)
	m.InputFetchStartTimestamp = timestamppb.New(t)
	m.InputFetchCompletedTimestamp = next(fetch)
	m.ExecutionStartTimestamp = timestamppb.New(t)
	m.ExecutionCompletedTimestamp = next(run)
	m.OutputUploadStartTimestamp = timestamppb.New(t)
	m.OutputUploadCompletedTimestamp = next(upload)
	m.WorkerCompletedTimestamp = timestamppb.New(t)
	return m
}

func get(t *testing.T, h http.Handler, url string) (int, string, http.Header) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, url, nil))
	return w.Code, w.Body.String(), w.Header()
}

func mustContain(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(body, want) {
			t.Errorf("%s lacks %q:\n%s", what, want, body)
		}
	}
}
