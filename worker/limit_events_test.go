package worker

import (
	"context"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/sandbox"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// resultExecutor answers every action with a copy of one result.
type resultExecutor struct{ result *remoteexecution.ActionResult }

func (e resultExecutor) Execute(ctx context.Context, request *Request, observer Observer) *remoteexecution.ExecuteResponse {
	return &remoteexecution.ExecuteResponse{Result: e.result}
}

func TestResultsAfterALimitKillAreNotCached(t *testing.T) {
	storage, err := storage.NewLocalStorage(t.TempDir(), 64<<20, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer storage.Close()
	fn := digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)
	for i, tc := range []struct {
		run        sandbox.Result
		wantCached bool
		wantReason string
	}{
		{run: sandbox.Result{}, wantCached: true},
		{run: sandbox.Result{OOMKilled: true}, wantReason: "memory limit of 67108864 bytes"},
		{run: sandbox.Result{PidsLimitHit: true}, wantReason: "limit of 64 processes"},
		{run: sandbox.Result{DiskBudgetExceeded: true}, wantReason: "disk budget of 1048576 bytes"},
	} {
		result := &remoteexecution.ActionResult{ExecutionMetadata: &remoteexecution.ExecutedActionMetadata{}}
		limits := sandbox.Limits{MemoryBytes: 64 << 20, MaxProcesses: 64, DiskBytes: 1 << 20}
		if events := limitEvents(&tc.run, limits); events != "" {
			result.ExecutionMetadata.AuxiliaryMetadata = append(result.ExecutionMetadata.AuxiliaryMetadata, notCachedMetadata(events))
		}
		if reason, _ := notCachedReason(result); !strings.Contains(reason, tc.wantReason) {
			t.Errorf("case %d: reason %q, want it to mention %q", i, reason, tc.wantReason)
		}
		g := fn.NewGenerator(1)
		g.Write([]byte{byte(i)})
		actionDigest := g.Sum()
		e := NewCachingExecutor(resultExecutor{result}, storage)
		response := e.Execute(context.Background(), &Request{DigestFunction: fn, ActionDigest: actionDigest, Action: &remoteexecution.Action{}}, func(Stage) {})
		if response.Status.GetCode() != 0 {
			t.Fatalf("case %d: %v", i, response.Status)
		}
		_, err := storage.ActionCache.Get(context.Background(), actionDigest).ToByteSlice(1 << 20)
		if cached := err == nil; cached != tc.wantCached {
			t.Errorf("case %d (%+v): cached %v (%v), want %v", i, tc.run, cached, status.Code(err), tc.wantCached)
		} else if !cached && status.Code(err) != codes.NotFound {
			t.Errorf("case %d: %v", i, err)
		}
	}
}
