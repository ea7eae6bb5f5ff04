package execution

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/bitzel/bitzel-worker/worker/livelogs"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Options configure the Execution service.
type Options struct {
	Executor worker.Executor
	// ActionCache is consulted before an action takes a slot; it
	// should check that the outputs it refers to are still in the CAS
	// (bb-storage's completeness checking does).
	ActionCache blobstore.BlobAccess
	// MaximumMessageSizeBytes bounds ActionResults read from the AC.
	MaximumMessageSizeBytes int
	// Concurrency is the number of actions run at once; the rest wait
	// in the queue.
	Concurrency int
	// CompletedRetention is how long a finished operation can still
	// be waited on by name (a client that lost its stream reconnects
	// with WaitExecution), and MaximumCompleted how many are kept at
	// most: each holds its ExecuteResponse, so without a count bound a
	// busy worker's memory would grow with its action rate.
	CompletedRetention time.Duration
	MaximumCompleted   int
	// Recorder (optional) is told of results served from the Action
	// Cache, which never reach the Executor.
	Recorder worker.ActionRecorder
	// LiveLogs (optional) is where running actions' stdout and stderr
	// are offered to ByteStream readers.
	LiveLogs *livelogs.Registry
}

// actionKey identifies an action for merging identical in-flight
// executions.
type actionKey struct {
	instanceName string
	digest       digest.Digest
}

// Server is the REAPI Execution service of `serve`: an in-process
// queue in front of a worker.Executor.
type Server struct {
	options Options
	slots   chan struct{}
	// ctx is what running actions see; Shutdown cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// queued counts actions waiting for a slot.
	queued atomic.Int64

	mu         sync.Mutex
	inFlight   map[actionKey]*operation
	operations map[string]*operation
	// completed lists finished operations, oldest first, until they
	// are forgotten.
	completed []completedOperation
}

type completedOperation struct {
	name string
	at   time.Time
}

var _ remoteexecution.ExecutionServer = (*Server)(nil)

// NewServer creates the Execution service.
func NewServer(options Options) *Server {
	if options.Concurrency <= 0 {
		options.Concurrency = 1
	}
	if options.MaximumCompleted <= 0 {
		options.MaximumCompleted = 1000
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		options:    options,
		slots:      make(chan struct{}, options.Concurrency),
		ctx:        ctx,
		cancel:     cancel,
		inFlight:   map[actionKey]*operation{},
		operations: map[string]*operation{},
	}
}

func (s *Server) Execute(request *remoteexecution.ExecuteRequest, stream remoteexecution.Execution_ExecuteServer) error {
	ctx := stream.Context()
	instanceName, err := digest.NewInstanceName(request.InstanceName)
	if err != nil {
		return util.StatusWrapf(err, "Invalid instance name %q", request.InstanceName)
	}
	digestFunction, err := instanceName.GetDigestFunction(request.DigestFunction, len(request.ActionDigest.GetHash()))
	if err != nil {
		// bb-storage's message does not say which one.
		return util.StatusWrapf(err, "Digest function %s (with a %d-character action hash) of instance name %#v", request.DigestFunction, len(request.ActionDigest.GetHash()), request.InstanceName)
	}
	actionDigest, err := digestFunction.NewDigestFromProto(request.ActionDigest)
	if err != nil {
		return util.StatusWrap(err, "Invalid action digest")
	}
	r := &worker.Request{
		InstanceName:    instanceName,
		DigestFunction:  digestFunction,
		ActionDigest:    actionDigest,
		SkipCacheLookup: request.SkipCacheLookup,
		QueuedTimestamp: timestamppb.Now(),
		RequestMetadata: worker.RequestMetadataFromContext(ctx),
		ClientIdentity:  livelogs.ClientIdentity(ctx),
	}
	if !request.SkipCacheLookup {
		if op := s.lookupCache(ctx, r); op != nil {
			return op.stream(ctx, stream.Send)
		}
	}
	return s.enqueue(r).stream(ctx, stream.Send)
}

// lookupCache returns a completed operation for an action whose result
// is in the Action Cache.
func (s *Server) lookupCache(ctx context.Context, request *worker.Request) *operation {
	actionDigest := request.ActionDigest
	m, err := s.options.ActionCache.Get(ctx, actionDigest).ToProto(&remoteexecution.ActionResult{}, s.options.MaximumMessageSizeBytes)
	if err != nil {
		// NotFound, or an incomplete result whose outputs are gone:
		// run the action. Other errors do not stop it either.
		return nil
	}
	op := newOperation(uuid.NewString(), actionDigest)
	response := &remoteexecution.ExecuteResponse{Result: m.(*remoteexecution.ActionResult), CachedResult: true}
	if s.options.Recorder != nil {
		s.options.Recorder.ActionStarted(request).ActionCompleted(response)
	}
	op.complete(response)
	// Registered like any operation, so WaitExecution finds it.
	s.mu.Lock()
	s.operations[op.name] = op
	s.mu.Unlock()
	s.forgetLater(op)
	return op
}

func (s *Server) enqueue(request *worker.Request) *operation {
	key := actionKey{instanceName: request.InstanceName.String(), digest: request.ActionDigest}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A client that skips the cache asks for a fresh run, so it does
	// not join one that is in flight (Buildbarn does the same).
	if !request.SkipCacheLookup {
		if op, ok := s.inFlight[key]; ok {
			return op
		}
	}
	op := newOperation(uuid.NewString(), request.ActionDigest)
	s.operations[op.name] = op
	if !request.SkipCacheLookup {
		s.inFlight[key] = op
	}
	s.wg.Add(1)
	go s.run(key, op, request)
	return op
}

func (s *Server) run(key actionKey, op *operation, request *worker.Request) {
	defer s.wg.Done()
	var response *remoteexecution.ExecuteResponse
	s.queued.Add(1)
	select {
	case s.slots <- struct{}{}:
		s.queued.Add(-1)
		ctx := s.ctx
		if s.options.LiveLogs != nil {
			ctx = liveLogsContext(ctx, s.options.LiveLogs, op, request)
		}
		response = s.options.Executor.Execute(ctx, request, func(worker.Stage) {
			op.setStage(remoteexecution.ExecutionStage_EXECUTING)
		})
		<-s.slots
	case <-s.ctx.Done():
		s.queued.Add(-1)
		response = &remoteexecution.ExecuteResponse{
			Status: status.New(codes.Unavailable, "The worker is shutting down; the action was not started").Proto(),
		}
	}
	s.mu.Lock()
	if s.inFlight[key] == op {
		delete(s.inFlight, key)
	}
	s.mu.Unlock()
	op.complete(response)
	s.forgetLater(op)
}

// forgetLater records a completed operation, and forgets those past
// the retention period or beyond the count bound.
func (s *Server) forgetLater(op *operation) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.completed = append(s.completed, completedOperation{name: op.name, at: now})
	drop := 0
	for drop < len(s.completed) && (len(s.completed)-drop > s.options.MaximumCompleted || now.Sub(s.completed[drop].at) > s.options.CompletedRetention) {
		delete(s.operations, s.completed[drop].name)
		drop++
	}
	if drop > 0 {
		// Copy rather than reslice, so the dropped names are freed.
		s.completed = append([]completedOperation(nil), s.completed[drop:]...)
	}
}

func (s *Server) WaitExecution(request *remoteexecution.WaitExecutionRequest, stream remoteexecution.Execution_WaitExecutionServer) error {
	s.mu.Lock()
	op, ok := s.operations[request.Name]
	s.mu.Unlock()
	if !ok {
		return status.Errorf(codes.NotFound, "Operation %q not found: it is unknown, or finished more than %v or %d operations ago", request.Name, s.options.CompletedRetention, s.options.MaximumCompleted)
	}
	return op.stream(stream.Context(), stream.Send)
}

// QueueLength returns the number of actions waiting for a slot.
func (s *Server) QueueLength() int {
	return int(s.queued.Load())
}

// Shutdown stops running and queued actions (they complete with an
// error their clients see) and waits for them to be cleaned up.
func (s *Server) Shutdown() {
	s.cancel()
	s.wg.Wait()
}
