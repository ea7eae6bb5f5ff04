package worker

import (
	"context"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// requestRecorder answers with response and keeps the requests.
type requestRecorder struct {
	response *remoteexecution.ExecuteResponse
	requests []*Request
}

func (e *requestRecorder) Execute(ctx context.Context, request *Request, observer Observer) *remoteexecution.ExecuteResponse {
	e.requests = append(e.requests, request)
	return e.response
}

// failingPuts refuses every write.
type failingPuts struct{ blobstore.BlobAccess }

func (failingPuts) Put(context.Context, digest.Digest, buffer.Buffer) error {
	return status.Error(codes.Unavailable, "AC is down")
}

func cachedIn(t *testing.T, storage *storage.Storage, d digest.Digest) bool {
	t.Helper()
	_, err := storage.ActionCache.Get(context.Background(), d).ToByteSlice(1 << 20)
	if err != nil && status.Code(err) != codes.NotFound {
		t.Fatal(err)
	}
	return err == nil
}

func TestCachingExecutorFetchesTheActionOnceAndCachesOnlySuccess(t *testing.T) {
	storage := newTestStorage(t)
	ok := &remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{ExitCode: 0}}
	for _, tc := range []struct {
		name       string
		action     *remoteexecution.Action
		response   *remoteexecution.ExecuteResponse
		wantCached bool
	}{
		{"success", &remoteexecution.Action{Salt: []byte("1")}, ok, true},
		{"do_not_cache", &remoteexecution.Action{Salt: []byte("2"), DoNotCache: true}, ok, false},
		{"non-zero exit", &remoteexecution.Action{Salt: []byte("3")}, &remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{ExitCode: 1}}, false},
		{"error status", &remoteexecution.Action{Salt: []byte("4")}, &remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{}, Status: status.New(codes.DeadlineExceeded, "timed out").Proto()}, false},
		{"no result", &remoteexecution.Action{Salt: []byte("5")}, &remoteexecution.ExecuteResponse{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			actionDigest := putMessage(t, storage, tc.action)
			base := &requestRecorder{response: tc.response}
			response := NewCachingExecutor(base, storage).Execute(context.Background(), &Request{DigestFunction: testFunction, ActionDigest: actionDigest}, NoopObserver)
			if response != tc.response {
				t.Errorf("response %v, want the base's", response)
			}
			// The action is fetched here and handed down.
			if len(base.requests) != 1 || base.requests[0].Action.GetSalt()[0] != tc.action.Salt[0] {
				t.Fatalf("base saw %v, want the request with the fetched action", base.requests)
			}
			if got := cachedIn(t, storage, actionDigest); got != tc.wantCached {
				t.Errorf("cached %v, want %v", got, tc.wantCached)
			}
		})
	}
}

func TestCachingExecutorReportsAMissingActionAndAFailedWrite(t *testing.T) {
	storage := newTestStorage(t)
	base := &requestRecorder{response: &remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{}}}
	stages := &stageRecorder{}
	absent := digestOfBytes([]byte("absent"))
	response := NewCachingExecutor(base, storage).Execute(context.Background(), &Request{DigestFunction: testFunction, ActionDigest: absent}, stages.observe)
	if st := status.FromProto(response.Status); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "Failed to obtain the action") {
		t.Errorf("%v %q, want FAILED_PRECONDITION for the missing action", st.Code(), st.Message())
	}
	if len(base.requests) != 0 {
		t.Error("the base ran without an action")
	}
	if got := stages.seen(); len(got) != 1 || got[0] != StageStarted {
		t.Errorf("stages %v, want started (so that front ends see the action began)", got)
	}

	broken := *storage
	broken.ActionCache = failingPuts{storage.ActionCache}
	response = NewCachingExecutor(base, &broken).Execute(context.Background(), &Request{DigestFunction: testFunction, ActionDigest: absent, Action: &remoteexecution.Action{}}, NoopObserver)
	if st := status.FromProto(response.Status); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "Failed to store the action result in the Action Cache: AC is down") {
		t.Errorf("%v %q, want the failed write reported", st.Code(), st.Message())
	}
	if response.Result == nil {
		t.Error("the result was dropped with the failed write")
	}
}
