package execution

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"google.golang.org/genproto/googleapis/longrunning"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeExecuteStream is the server side of an Execute or WaitExecution
// call: it keeps what is sent.
type fakeExecuteStream struct {
	grpc.ServerStream
	ctx context.Context

	mu   sync.Mutex
	sent []*longrunning.Operation
	// onSend, when set, sees every operation as it is sent.
	onSend func(*longrunning.Operation)
}

func newFakeExecuteStream(ctx context.Context) *fakeExecuteStream {
	return &fakeExecuteStream{ctx: ctx}
}

func (s *fakeExecuteStream) Context() context.Context { return s.ctx }

func (s *fakeExecuteStream) Send(op *longrunning.Operation) error {
	s.mu.Lock()
	s.sent = append(s.sent, op)
	onSend := s.onSend
	s.mu.Unlock()
	if onSend != nil {
		onSend(op)
	}
	return nil
}

func (s *fakeExecuteStream) last(t *testing.T) (*longrunning.Operation, *remoteexecution.ExecuteResponse) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sent) == 0 {
		t.Fatal("nothing sent")
	}
	op := s.sent[len(s.sent)-1]
	if !op.Done {
		t.Fatalf("last operation %v is not done", op)
	}
	response := &remoteexecution.ExecuteResponse{}
	if err := op.GetResponse().UnmarshalTo(response); err != nil {
		t.Fatal(err)
	}
	return op, response
}

func stageOf(t *testing.T, op *longrunning.Operation) remoteexecution.ExecutionStage_Value {
	t.Helper()
	m := &remoteexecution.ExecuteOperationMetadata{}
	if err := op.Metadata.UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
	return m.Stage
}

// gateExecutor blocks every action until released, counting how many
// run at once.
type gateExecutor struct {
	release chan struct{}
	started chan *worker.Request

	calls, running, maxRunning atomic.Int64
}

func newGateExecutor() *gateExecutor {
	return &gateExecutor{release: make(chan struct{}), started: make(chan *worker.Request, 100)}
}

func (e *gateExecutor) Execute(ctx context.Context, request *worker.Request, observer worker.Observer) *remoteexecution.ExecuteResponse {
	e.calls.Add(1)
	n := e.running.Add(1)
	for {
		m := e.maxRunning.Load()
		if n <= m || e.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	defer e.running.Add(-1)
	observer(worker.StageRunning)
	e.started <- request
	select {
	case <-e.release:
		return &remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{ExitCode: 7}}
	case <-ctx.Done():
		return &remoteexecution.ExecuteResponse{Status: status.FromContextError(ctx.Err()).Proto()}
	}
}

func (e *gateExecutor) waitStarted(t *testing.T) *worker.Request {
	t.Helper()
	select {
	case r := <-e.started:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no action started")
		return nil
	}
}

func executeRequest(data string, skip bool) *remoteexecution.ExecuteRequest {
	return &remoteexecution.ExecuteRequest{ActionDigest: digestOfBytes([]byte(data)).GetProto(), SkipCacheLookup: skip}
}

// execute runs Execute in the background; its error arrives on the
// channel.
func execute(s *Server, request *remoteexecution.ExecuteRequest, stream *fakeExecuteStream) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.Execute(request, stream) }()
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Execute did not return")
		return nil
	}
}

func TestExecutionServerServesActionCacheHitsWithoutRunning(t *testing.T) {
	actionCache := newMemoryActionCache()
	executor := newGateExecutor()
	recorder := &fakeRecorder{}
	s := NewServer(Options{
		Executor: executor, ActionCache: actionCache, MaximumMessageSizeBytes: 1 << 20,
		CompletedRetention: time.Hour, Recorder: recorder,
	})
	defer s.Shutdown()
	request := executeRequest("cached", false)
	cached := &remoteexecution.ActionResult{ExitCode: 0, StdoutDigest: digestOfBytes([]byte("out")).GetProto()}
	if err := actionCache.Put(context.Background(), digestOfBytes([]byte("cached")), buffer.NewProtoBufferFromProto(cached, buffer.UserProvided)); err != nil {
		t.Fatal(err)
	}
	stream := newFakeExecuteStream(context.Background())
	if err := s.Execute(request, stream); err != nil {
		t.Fatal(err)
	}
	op, response := stream.last(t)
	if !response.CachedResult || response.Result.StdoutDigest.GetHash() != cached.StdoutDigest.Hash {
		t.Errorf("response %v, want the cached result marked cached", response)
	}
	if executor.calls.Load() != 0 {
		t.Errorf("executor called %d times for a cache hit", executor.calls.Load())
	}
	if len(recorder.responses) != 1 || !recorder.responses[0].CachedResult {
		t.Errorf("recorder heard %v, want the cache hit", recorder.responses)
	}
	// The finished operation can be waited on by name.
	waiting := newFakeExecuteStream(context.Background())
	if err := s.WaitExecution(&remoteexecution.WaitExecutionRequest{Name: op.Name}, waiting); err != nil {
		t.Fatal(err)
	}
	if again, r := waiting.last(t); again.Name != op.Name || !r.CachedResult {
		t.Errorf("WaitExecution gave %v %v", again, r)
	}

	// SkipCacheLookup runs it although the AC has it.
	skipped := execute(s, executeRequest("cached", true), newFakeExecuteStream(context.Background()))
	executor.waitStarted(t)
	executor.release <- struct{}{}
	if err := wait(t, skipped); err != nil {
		t.Fatal(err)
	}
	if executor.calls.Load() != 1 {
		t.Errorf("executor called %d times with SkipCacheLookup, want 1", executor.calls.Load())
	}
}

func TestExecutionServerMergesIdenticalInFlightActions(t *testing.T) {
	actionCache := newMemoryActionCache()
	executor := newGateExecutor()
	s := NewServer(Options{Executor: executor, ActionCache: actionCache, MaximumMessageSizeBytes: 1 << 20, Concurrency: 4, CompletedRetention: time.Hour})
	defer s.Shutdown()
	first := newFakeExecuteStream(context.Background())
	firstDone := execute(s, executeRequest("a", false), first)
	executor.waitStarted(t)
	second := newFakeExecuteStream(context.Background())
	secondDone := execute(s, executeRequest("a", false), second)
	// A client that skips the cache wants a run of its own.
	fresh := newFakeExecuteStream(context.Background())
	freshDone := execute(s, executeRequest("a", true), fresh)
	executor.waitStarted(t)
	// Wait until the second client streams the shared operation.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		second.mu.Lock()
		n := len(second.sent)
		second.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("second client got nothing")
		}
	}
	close(executor.release)
	for _, done := range []<-chan error{firstDone, secondDone, freshDone} {
		if err := wait(t, done); err != nil {
			t.Fatal(err)
		}
	}
	if n := executor.calls.Load(); n != 2 {
		t.Errorf("executor called %d times, want 2 (one shared, one fresh)", n)
	}
	a, ra := first.last(t)
	b, rb := second.last(t)
	c, _ := fresh.last(t)
	if a.Name != b.Name || ra.Result.ExitCode != 7 || rb.Result.ExitCode != 7 {
		t.Errorf("merged clients got %s (%v) and %s (%v), want one operation", a.Name, ra, b.Name, rb)
	}
	if c.Name == a.Name {
		t.Error("a SkipCacheLookup client joined the in-flight operation")
	}
	// Streams saw the action executing before it completed.
	first.mu.Lock()
	stages := []remoteexecution.ExecutionStage_Value{}
	for _, op := range first.sent {
		stages = append(stages, stageOf(t, op))
	}
	first.mu.Unlock()
	if len(stages) < 2 || stages[0] == remoteexecution.ExecutionStage_COMPLETED || stages[len(stages)-1] != remoteexecution.ExecutionStage_COMPLETED {
		t.Errorf("stages streamed %v, want progress then COMPLETED", stages)
	}
	seenExecuting := false
	for _, st := range stages {
		seenExecuting = seenExecuting || st == remoteexecution.ExecutionStage_EXECUTING
	}
	if !seenExecuting {
		t.Errorf("stages streamed %v, want EXECUTING among them", stages)
	}
	// Once it is done, the same action runs anew.
	again := execute(s, executeRequest("a", false), newFakeExecuteStream(context.Background()))
	executor.waitStarted(t)
	if err := wait(t, again); err != nil {
		t.Fatal(err)
	}
	if n := executor.calls.Load(); n != 3 {
		t.Errorf("executor called %d times, want a new run after completion", n)
	}
}

func TestExecutionServerBoundsRunningActionsByConcurrency(t *testing.T) {
	actionCache := newMemoryActionCache()
	executor := newGateExecutor()
	s := NewServer(Options{Executor: executor, ActionCache: actionCache, MaximumMessageSizeBytes: 1 << 20, Concurrency: 2, CompletedRetention: time.Hour})
	defer s.Shutdown()
	var dones []<-chan error
	for _, name := range []string{"1", "2", "3", "4", "5"} {
		dones = append(dones, execute(s, executeRequest(name, false), newFakeExecuteStream(context.Background())))
	}
	executor.waitStarted(t)
	executor.waitStarted(t)
	for deadline := time.Now().Add(10 * time.Second); s.QueueLength() != 3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("queue length %d, want 3", s.QueueLength())
		}
	}
	if n := executor.running.Load(); n != 2 {
		t.Errorf("%d running, want 2", n)
	}
	close(executor.release)
	for _, done := range dones {
		if err := wait(t, done); err != nil {
			t.Fatal(err)
		}
	}
	if m := executor.maxRunning.Load(); m != 2 {
		t.Errorf("at most %d ran at once, want 2", m)
	}
	if executor.calls.Load() != 5 || s.QueueLength() != 0 {
		t.Errorf("%d ran, %d queued; want 5 and 0", executor.calls.Load(), s.QueueLength())
	}
}

func TestExecutionServerShutdownCancelsRunningAndQueuedActions(t *testing.T) {
	actionCache := newMemoryActionCache()
	executor := newGateExecutor()
	s := NewServer(Options{Executor: executor, ActionCache: actionCache, MaximumMessageSizeBytes: 1 << 20, Concurrency: 1, CompletedRetention: time.Hour})
	running, queued := newFakeExecuteStream(context.Background()), newFakeExecuteStream(context.Background())
	runningDone := execute(s, executeRequest("run", false), running)
	executor.waitStarted(t)
	queuedDone := execute(s, executeRequest("wait", false), queued)
	for deadline := time.Now().Add(10 * time.Second); s.QueueLength() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("second action never queued")
		}
	}
	s.Shutdown()
	for _, done := range []<-chan error{runningDone, queuedDone} {
		if err := wait(t, done); err != nil {
			t.Fatal(err)
		}
	}
	if _, r := running.last(t); status.FromProto(r.Status).Code() != codes.Canceled {
		t.Errorf("running action completed with %v, want CANCELLED", r.Status)
	}
	if _, r := queued.last(t); status.FromProto(r.Status).Code() != codes.Unavailable || executor.calls.Load() != 1 {
		t.Errorf("queued action completed with %v after %d runs, want UNAVAILABLE without running", r.Status, executor.calls.Load())
	}
}

func TestExecutionServerRefusesBadRequestsAndUnknownNames(t *testing.T) {
	actionCache := newMemoryActionCache()
	executor := newGateExecutor()
	s := NewServer(Options{Executor: executor, ActionCache: actionCache, CompletedRetention: time.Minute, MaximumCompleted: 5})
	defer s.Shutdown()
	for _, tc := range []struct {
		name    string
		request *remoteexecution.ExecuteRequest
	}{
		{"bad instance name", &remoteexecution.ExecuteRequest{InstanceName: "a/blobs/b", ActionDigest: digestOfBytes(nil).GetProto()}},
		{"bad hash length", &remoteexecution.ExecuteRequest{ActionDigest: &remoteexecution.Digest{Hash: "abc", SizeBytes: 1}}},
		{"bad digest", &remoteexecution.ExecuteRequest{ActionDigest: &remoteexecution.Digest{Hash: digestOfBytes(nil).GetHashString(), SizeBytes: -1}}},
	} {
		err := s.Execute(tc.request, newFakeExecuteStream(context.Background()))
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", tc.name, err)
		}
	}
	if executor.calls.Load() != 0 {
		t.Errorf("executor called %d times for bad requests", executor.calls.Load())
	}
	err := s.WaitExecution(&remoteexecution.WaitExecutionRequest{Name: "no-such-operation"}, newFakeExecuteStream(context.Background()))
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != `Operation "no-such-operation" not found: it is unknown, or finished more than 1m0s or 5 operations ago` {
		t.Errorf("%v, want NOT_FOUND naming the operation and the retention", err)
	}
}

// A client that goes away stops its stream, not the action, which
// others can still wait on.
func TestExecutionServerActionOutlivesItsClient(t *testing.T) {
	actionCache := newMemoryActionCache()
	executor := newGateExecutor()
	s := NewServer(Options{Executor: executor, ActionCache: actionCache, CompletedRetention: time.Hour})
	defer s.Shutdown()
	ctx, cancel := context.WithCancel(context.Background())
	stream := newFakeExecuteStream(ctx)
	done := execute(s, executeRequest("long", false), stream)
	executor.waitStarted(t)
	cancel()
	if err := wait(t, done); status.Code(err) != codes.Canceled && err != context.Canceled {
		t.Fatalf("Execute after the client left: %v, want its context's error", err)
	}
	stream.mu.Lock()
	name := stream.sent[0].Name
	stream.mu.Unlock()
	waiting := newFakeExecuteStream(context.Background())
	waitDone := make(chan error, 1)
	go func() { waitDone <- s.WaitExecution(&remoteexecution.WaitExecutionRequest{Name: name}, waiting) }()
	close(executor.release)
	if err := wait(t, waitDone); err != nil {
		t.Fatal(err)
	}
	if _, r := waiting.last(t); r.Result.GetExitCode() != 7 {
		t.Errorf("waited-on response %v, want the action's result", r)
	}
}
