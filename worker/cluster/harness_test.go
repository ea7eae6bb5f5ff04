package cluster_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/internal/testsupport"
	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/bitzel/bitzel-worker/worker/cluster"
	"github.com/bitzel/bitzel-worker/worker/cluster/schedulertest"
	"github.com/buildbarn/bb-storage/pkg/digest"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// schedulerServer serves a schedulerDouble over gRPC on an in-memory
// listener that can be taken down and brought back (a scheduler
// restart) while clients keep their connection object, as a worker
// keeps its grpc.ClientConn across scheduler restarts.
type schedulerServer struct {
	lock     sync.Mutex
	listener *bufconn.Listener
	server   *grpc.Server
}

func (s *schedulerServer) start(double *schedulertest.Scheduler) {
	s.lock.Lock()
	defer s.lock.Unlock()
	s.listener = bufconn.Listen(1 << 20)
	s.server = grpc.NewServer()
	remoteworker.RegisterOperationQueueServer(s.server, double)
	go s.server.Serve(s.listener)
}

// stop drops every connection and fails the calls in flight, as a
// crashing scheduler would.
func (s *schedulerServer) stop() {
	s.lock.Lock()
	server := s.server
	s.server, s.listener = nil, nil
	s.lock.Unlock()
	if server != nil {
		server.Stop()
	}
}

func (s *schedulerServer) dial(ctx context.Context, _ string) (net.Conn, error) {
	s.lock.Lock()
	listener := s.listener
	s.lock.Unlock()
	if listener == nil {
		return nil, errors.New("scheduler is down")
	}
	return listener.DialContext(ctx)
}

type harness struct {
	t         *testing.T
	clock     *fakeClock
	scheduler *schedulerServer
	executor  *fakeExecutor
	queue     remoteworker.OperationQueueClient
}

func newHarness(t *testing.T, clock *fakeClock, double *schedulertest.Scheduler) *harness {
	h := &harness{t: t, clock: clock, scheduler: &schedulerServer{}, executor: newFakeExecutor()}
	h.scheduler.start(double)
	conn, err := grpc.NewClient("passthrough:///scheduler",
		grpc.WithContextDialer(h.scheduler.dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// gRPC's own reconnection runs on real time; keep it short
		// so that a restarted double is reachable again at once.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1.5, MaxDelay: 20 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	h.queue = remoteworker.NewOperationQueueClient(conn)
	t.Cleanup(func() {
		conn.Close()
		h.scheduler.stop()
	})
	return h
}

// running is a Client whose Run is in progress.
type running struct {
	client cluster.Client
	cancel context.CancelFunc
	err    error
	// finished is closed once Run has returned err.
	finished chan struct{}
}

// start runs a Client with options completed by test defaults. At the
// end of the test it is shut down, with pending actions ended and fake
// time pushed forward until it has drained.
func (h *harness) start(options cluster.Options) *running {
	h.t.Helper()
	return h.run(h.newClient(options, nil))
}

// newClient makes a Client with options completed by test defaults,
// running every slot on h.executor unless newExecutor is given.
func (h *harness) newClient(options cluster.Options, newExecutor cluster.SlotExecutorFactory) cluster.Client {
	h.t.Helper()
	if options.Clock == nil {
		options.Clock = h.clock
	}
	if options.Logger == nil {
		options.Logger = slog.New(slog.DiscardHandler)
		if testing.Verbose() {
			options.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	if newExecutor == nil {
		newExecutor = func(int, string) (worker.Executor, error) { return h.executor, nil }
	}
	if options.StageReportDelay == 0 {
		// Most tests assert one report per stage, with fake time
		// standing still; those about holding reports back set a
		// delay of their own.
		options.StageReportDelay = -1
	}
	client, err := cluster.NewClientWithSlotExecutors(h.queue, newExecutor, options)
	if err != nil {
		h.t.Fatal(err)
	}
	return client
}

// run runs a Client made by the test, shutting it down at the end of
// the test as start does.
func (h *harness) run(client cluster.Client) *running {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{client: client, cancel: cancel, finished: make(chan struct{})}
	go func() {
		r.err = client.Run(ctx)
		close(r.finished)
	}()
	h.t.Cleanup(func() {
		h.executor.endAll()
		cancel()
		deadline := time.Now().Add(realTimeLimit)
		for time.Now().Before(deadline) {
			select {
			case <-r.finished:
				return
			case <-time.After(5 * time.Millisecond):
				// Not an assertion: a drain may wait on
				// fake timers (backoff, next sync) that only
				// this loop can make fire.
				h.clock.advance(time.Minute)
			}
		}
		h.t.Error("Run did not return after cleanup")
	})
	return r
}

// waitReturned waits for Run to return and checks it returned nil.
func (r *running) waitReturned(t *testing.T) {
	t.Helper()
	select {
	case <-r.finished:
		if r.err != nil {
			t.Fatalf("Run returned %v", r.err)
		}
	case <-time.After(realTimeLimit):
		t.Fatal("Run did not return")
	}
}

// returned tells whether Run has returned, without waiting.
func (r *running) returned() bool {
	isDone, _ := r.hasReturned()
	return isDone
}

// hasReturned is returned as a condition for fakeClock.waitForTimerOr.
func (r *running) hasReturned() (bool, <-chan struct{}) {
	select {
	case <-r.finished:
		return true, nil
	default:
		return false, r.finished
	}
}

func sha256Digest(content string) *remoteexecution.Digest {
	sum := sha256.Sum256([]byte(content))
	return &remoteexecution.Digest{Hash: hex.EncodeToString(sum[:]), SizeBytes: int64(len(content))}
}

func mustInstanceName(t *testing.T, name string) digest.InstanceName {
	t.Helper()
	instanceName, err := digest.NewInstanceName(name)
	if err != nil {
		t.Fatal(err)
	}
	return instanceName
}

// expectRequest takes the worker's next request and checks its stage
// and prefer_being_idle flag.
func expectRequest(t *testing.T, d *schedulertest.Scheduler, workerID map[string]string, stage string, preferBeingIdle bool) *remoteworker.SynchronizeRequest {
	t.Helper()
	request := d.NextRequest(t, workerID)
	if got := testsupport.SynchronizeStage(request); got != stage {
		t.Fatalf("worker %v reported %s, want %s", workerID, got, stage)
	}
	if request.PreferBeingIdle != preferBeingIdle {
		t.Fatalf("worker %v reported %s with prefer_being_idle=%v, want %v", workerID, stage, request.PreferBeingIdle, preferBeingIdle)
	}
	return request
}

func completedResponse(request *remoteworker.SynchronizeRequest) *remoteexecution.ExecuteResponse {
	return request.CurrentState.GetExecuting().GetCompleted()
}
