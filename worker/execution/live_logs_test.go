package execution

import (
	"context"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/bitzel/bitzel-worker/worker/livelogs"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

// The Execution service's side of live logs: while the executor's
// offer stands, the registry serves both logs to the starting client
// and the operation names them; once withdrawn, neither.
func TestOperationNamesItsLiveLogsOnlyWhileRunning(t *testing.T) {
	function := digest.MustNewFunction("main", remoteexecution.DigestFunction_SHA256)
	actionDigest, err := function.NewDigest(strings.Repeat("a", 64), 1)
	if err != nil {
		t.Fatal(err)
	}
	op := newOperation("op", actionDigest)
	registry := livelogs.NewRegistry()
	instance, err := digest.NewInstanceName("main")
	if err != nil {
		t.Fatal(err)
	}
	request := &worker.Request{InstanceName: instance, ClientIdentity: "me"}
	ctx := liveLogsContext(context.Background(), registry, op, request)
	offer, ok := worker.LiveLogsFromContext(ctx)
	if !ok {
		t.Fatal("the execution's context offers no live logs")
	}
	withdraw := offer(emptySource{}, emptySource{})
	metadata := func() *remoteexecution.ExecuteOperationMetadata {
		snapshot, _, _ := op.snapshot()
		m := &remoteexecution.ExecuteOperationMetadata{}
		if err := snapshot.Metadata.UnmarshalTo(m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := metadata()
	if !strings.HasPrefix(m.StdoutStreamName, "main/live-logs/") || !strings.HasSuffix(m.StdoutStreamName, "/stdout") || !strings.HasSuffix(m.StderrStreamName, "/stderr") {
		t.Fatalf("stream names %q %q", m.StdoutStreamName, m.StderrStreamName)
	}
	if registry.Len() != 2 {
		t.Fatalf("%d live logs registered, want 2", registry.Len())
	}
	withdraw()
	if m := metadata(); m.StdoutStreamName != "" || m.StderrStreamName != "" || registry.Len() != 0 {
		t.Fatalf("after the action: names %q %q, %d registered", m.StdoutStreamName, m.StderrStreamName, registry.Len())
	}
}

// emptySource is a live log with nothing written and nothing to come.
type emptySource struct{}

func (emptySource) Snapshot() (int64, bool, <-chan struct{}) { return 0, true, nil }
func (emptySource) ReadAt([]byte, int64) (int, error)        { return 0, nil }
