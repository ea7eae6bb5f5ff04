// Package schedulertest provides a stand-in for bb_scheduler's worker
// side (buildbarn.remoteworker.OperationQueue), for tests of workers:
// the unit tests of worker/cluster drive it with a fake clock over an
// in-memory connection, and the end-to-end tests serve it over TCP to
// the real bitzel-worker binary. It speaks the real protocol, but it is
// a double: what only a real bb_scheduler can show (its queues, size
// class learning, its own timeouts) is checked by hand against one.
package schedulertest

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"github.com/buildbarn/bb-storage/pkg/clock"
	"github.com/buildbarn/bb-storage/pkg/digest"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Scheduler is an OperationQueueServer that behaves as bb_scheduler's
// in-memory build queue does towards workers, reduced to one platform
// queue:
//
//   - workers whose size class exceeds the queue's predeclared maximum,
//     or that give none when the queue has size classes, are refused
//     with INVALID_ARGUMENT; two calls under one worker ID at once with
//     RESOURCE_EXHAUSTED;
//   - an idle worker takes the next queued task whose instance name
//     lies under the worker's instance_name_prefix (the rest goes out as
//     instance_name_suffix) and whose platform equals the worker's;
//     without one, the call is held open until a task arrives or the
//     worker hangs up, or, with IdleInterval set, answered at once
//     with next_synchronization_at that far away;
//   - prefer_being_idle makes every answer that would have waited or
//     assigned work an immediate "idle";
//   - a worker reporting its task in progress is told to carry on
//     (next_synchronization_at = now + BusyInterval) unless the task was
//     cancelled, when it is told to go idle; a worker reporting a task
//     it does not have is given its current task again or told to idle;
//   - a completed report of the worker's task is recorded, then handled
//     as an idle worker asking for work.
//
// Every request is logged per worker for the test to inspect in order.
type Scheduler struct {
	remoteworker.UnimplementedOperationQueueServer

	clock            clock.Clock
	platform         *remoteexecution.Platform
	maximumSizeClass uint32
	// BusyInterval is how far away next_synchronization_at is for a
	// worker executing a task. Set it before the first call.
	BusyInterval time.Duration
	// IdleInterval, when set, answers idle workers at once instead of
	// holding their call open. Set it before the first call.
	IdleInterval time.Duration
	// RealTimeLimit bounds how long the waiting helpers wait, in real
	// time, before they fail the test.
	RealTimeLimit time.Duration

	lock        sync.Mutex
	queue       []*Task
	workers     map[string]*workerRecord
	taskQueued  chan struct{}
	logChanged  chan struct{}
	requests    map[string][]*remoteworker.SynchronizeRequest
	cursors     map[string]int
	completions []Completion
}

// Task is an action queued by a client.
type Task struct {
	InstanceName   string
	ActionDigest   *remoteexecution.Digest
	Action         *remoteexecution.Action
	DigestFunction remoteexecution.DigestFunction_Value
	// Queued defaults to the time of Enqueue.
	Queued    *timestamppb.Timestamp
	Auxiliary []*anypb.Any

	cancelled bool
}

type workerRecord struct {
	// synchronizing is the context of the call being handled for the
	// worker. A call its worker has hung up on no longer counts: the
	// hang-up reaches us before the worker's next call does.
	synchronizing context.Context
	current       *Task
	suffix        string
}

// Completion is a completed report of the task a worker was given.
type Completion struct {
	// Worker is the worker ID as WorkerKey renders it.
	Worker   string
	Digest   *remoteexecution.Digest
	Response *remoteexecution.ExecuteResponse
}

// New returns a Scheduler with a platform queue for platform (sorted,
// as workers must send it) whose workers may have size classes up to
// maximumSizeClass (0: the queue has no size classes).
func New(clock clock.Clock, platform *remoteexecution.Platform, maximumSizeClass uint32) *Scheduler {
	return &Scheduler{
		clock:            clock,
		platform:         platform,
		maximumSizeClass: maximumSizeClass,
		BusyInterval:     10 * time.Second,
		RealTimeLimit:    20 * time.Second,
		workers:          map[string]*workerRecord{},
		taskQueued:       make(chan struct{}),
		logChanged:       make(chan struct{}),
		requests:         map[string][]*remoteworker.SynchronizeRequest{},
		cursors:          map[string]int{},
	}
}

// Enqueue queues an action as a client's Execute request would.
func (d *Scheduler) Enqueue(t *Task) *Task {
	d.lock.Lock()
	defer d.lock.Unlock()
	if t.Queued == nil {
		t.Queued = timestamppb.New(d.clock.Now())
	}
	d.queue = append(d.queue, t)
	close(d.taskQueued)
	d.taskQueued = make(chan struct{})
	return t
}

// Cancel marks a task as no longer wanted, as when its clients leave.
// A worker executing it is told to go idle at its next report.
func (d *Scheduler) Cancel(t *Task) {
	d.lock.Lock()
	defer d.lock.Unlock()
	t.cancelled = true
}

// Queued returns how many tasks wait for a worker.
func (d *Scheduler) Queued() int {
	d.lock.Lock()
	defer d.lock.Unlock()
	return len(d.queue)
}

// Synchronize implements remoteworker.OperationQueueServer.
func (d *Scheduler) Synchronize(ctx context.Context, request *remoteworker.SynchronizeRequest) (*remoteworker.SynchronizeResponse, error) {
	name := WorkerKey(request.WorkerId)
	d.lock.Lock()
	defer d.lock.Unlock()
	d.requests[name] = append(d.requests[name], proto.Clone(request).(*remoteworker.SynchronizeRequest))
	close(d.logChanged)
	d.logChanged = make(chan struct{})

	prefix, err := digest.NewInstanceName(request.InstanceNamePrefix)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "Invalid instance name %#v: %s", request.InstanceNamePrefix, err)
	}
	if request.SizeClass > d.maximumSizeClass {
		return nil, status.Errorf(codes.InvalidArgument, "Worker provided size class %d, which exceeds the predeclared maximum of %d", request.SizeClass, d.maximumSizeClass)
	}
	if d.maximumSizeClass > 0 && request.SizeClass < 1 {
		return nil, status.Error(codes.InvalidArgument, "Worker did not provide a size class, even though this platform queue uses them")
	}
	w, ok := d.workers[name]
	if !ok {
		w = &workerRecord{}
		d.workers[name] = w
	} else if w.synchronizing != nil && w.synchronizing.Err() == nil {
		return nil, status.Error(codes.ResourceExhausted, "A worker with the same worker ID is already synchronizing with the scheduler")
	}
	w.synchronizing = ctx
	defer func() {
		if w.synchronizing == ctx {
			w.synchronizing = nil
		}
	}()

	switch state := request.CurrentState.GetWorkerState().(type) {
	case *remoteworker.CurrentState_Idle:
		return d.currentOrNextTask(ctx, true, w, request, prefix)
	case *remoteworker.CurrentState_Executing_:
		executing := state.Executing
		if executing.ActionDigest == nil {
			return nil, status.Error(codes.InvalidArgument, "Worker is executing, but provided no action digest")
		}
		runningCurrent := w.current != nil && proto.Equal(w.current.ActionDigest, executing.ActionDigest)
		if completed, ok := executing.ExecutionState.(*remoteworker.CurrentState_Executing_Completed); ok {
			if !runningCurrent {
				return d.currentOrNextTask(ctx, true, w, request, prefix)
			}
			d.completions = append(d.completions, Completion{Worker: name, Digest: executing.ActionDigest, Response: completed.Completed})
			w.current = nil
			return d.nextTask(ctx, true, w, request, prefix)
		}
		if !runningCurrent {
			return d.currentOrNextTask(ctx, false, w, request, prefix)
		}
		if w.current.cancelled {
			w.current = nil
			return d.idleResponse(0), nil
		}
		return &remoteworker.SynchronizeResponse{NextSynchronizationAt: timestamppb.New(d.clock.Now().Add(d.BusyInterval))}, nil
	default:
		return nil, status.Error(codes.InvalidArgument, "Worker provided an unknown current state")
	}
}

// currentOrNextTask resends the worker's task if it has one: the worker
// says it is idle, so our previous answer must have been lost.
func (d *Scheduler) currentOrNextTask(ctx context.Context, wait bool, w *workerRecord, request *remoteworker.SynchronizeRequest, prefix digest.InstanceName) (*remoteworker.SynchronizeResponse, error) {
	if w.current != nil && w.current.cancelled {
		w.current = nil
	}
	if w.current != nil {
		return d.executingResponse(w), nil
	}
	return d.nextTask(ctx, wait, w, request, prefix)
}

// nextTask assigns a task, waiting for one only if wait is set (the
// worker is not busy with something else). Called and returns with
// d.lock held.
func (d *Scheduler) nextTask(ctx context.Context, wait bool, w *workerRecord, request *remoteworker.SynchronizeRequest, prefix digest.InstanceName) (*remoteworker.SynchronizeResponse, error) {
	if request.PreferBeingIdle {
		return d.idleResponse(0), nil
	}
	for {
		for i, t := range d.queue {
			suffix, ok := instanceNameSuffix(prefix, t.InstanceName)
			if !ok || t.cancelled || !proto.Equal(request.Platform, d.platform) {
				continue
			}
			d.queue = append(d.queue[:i], d.queue[i+1:]...)
			w.current, w.suffix = t, suffix
			return d.executingResponse(w), nil
		}
		if !wait {
			return d.idleResponse(0), nil
		}
		if d.IdleInterval > 0 {
			return d.idleResponse(d.IdleInterval), nil
		}
		taskQueued := d.taskQueued
		d.lock.Unlock()
		select {
		case <-taskQueued:
			d.lock.Lock()
			if ctx.Err() == nil {
				continue
			}
			// The worker hung up as the task came: it must not
			// be handed to a call nobody listens to.
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-ctx.Done():
			d.lock.Lock()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

func (d *Scheduler) executingResponse(w *workerRecord) *remoteworker.SynchronizeResponse {
	t := w.current
	return &remoteworker.SynchronizeResponse{
		NextSynchronizationAt: timestamppb.New(d.clock.Now().Add(d.BusyInterval)),
		DesiredState: &remoteworker.DesiredState{WorkerState: &remoteworker.DesiredState_Executing_{
			Executing: &remoteworker.DesiredState_Executing{
				ActionDigest:       t.ActionDigest,
				Action:             t.Action,
				QueuedTimestamp:    t.Queued,
				AuxiliaryMetadata:  t.Auxiliary,
				InstanceNameSuffix: w.suffix,
				DigestFunction:     t.DigestFunction,
			},
		}},
	}
}

func (d *Scheduler) idleResponse(after time.Duration) *remoteworker.SynchronizeResponse {
	return &remoteworker.SynchronizeResponse{
		NextSynchronizationAt: timestamppb.New(d.clock.Now().Add(after)),
		DesiredState:          &remoteworker.DesiredState{WorkerState: &remoteworker.DesiredState_Idle{Idle: &emptypb.Empty{}}},
	}
}

// instanceNameSuffix returns what follows prefix in instanceName, if
// instanceName lies under prefix.
func instanceNameSuffix(prefix digest.InstanceName, instanceName string) (string, bool) {
	p := prefix.String()
	switch {
	case p == "":
		return instanceName, true
	case instanceName == p:
		return "", true
	case strings.HasPrefix(instanceName, p+"/"):
		return instanceName[len(p)+1:], true
	}
	return "", false
}

// WorkerKey renders a worker ID as the Scheduler files it (and as
// bb_worker names the worker): JSON with sorted keys.
func WorkerKey(workerID map[string]string) string {
	data, err := json.Marshal(workerID)
	if err != nil {
		panic(err)
	}
	return string(data)
}

// NextRequest returns the worker's next request not yet returned.
func (d *Scheduler) NextRequest(t testing.TB, workerID map[string]string) *remoteworker.SynchronizeRequest {
	t.Helper()
	name := WorkerKey(workerID)
	limit := time.NewTimer(d.RealTimeLimit)
	defer limit.Stop()
	for {
		d.lock.Lock()
		changed := d.logChanged
		if cursor := d.cursors[name]; cursor < len(d.requests[name]) {
			d.cursors[name]++
			request := d.requests[name][cursor]
			d.lock.Unlock()
			return request
		}
		d.lock.Unlock()
		select {
		case <-changed:
		case <-limit.C:
			t.Fatalf("worker %s sent no further request", name)
		}
	}
}

// HasPendingRequests returns a condition: whether the worker sent a
// request NextRequest has not returned, and a channel closed when that
// may have changed.
func (d *Scheduler) HasPendingRequests(workerID map[string]string) func() (bool, <-chan struct{}) {
	name := WorkerKey(workerID)
	return func() (bool, <-chan struct{}) {
		d.lock.Lock()
		defer d.lock.Unlock()
		return len(d.requests[name]) > d.cursors[name], d.logChanged
	}
}

// FirstToRequest waits until one of the workers sends a request
// NextRequest has not returned yet, and returns that worker.
func (d *Scheduler) FirstToRequest(t testing.TB, workerIDs ...map[string]string) map[string]string {
	t.Helper()
	limit := time.NewTimer(d.RealTimeLimit)
	defer limit.Stop()
	for {
		d.lock.Lock()
		changed := d.logChanged
		for _, workerID := range workerIDs {
			name := WorkerKey(workerID)
			if len(d.requests[name]) > d.cursors[name] {
				d.lock.Unlock()
				return workerID
			}
		}
		d.lock.Unlock()
		select {
		case <-changed:
		case <-limit.C:
			t.Fatal("none of the workers sent a request")
		}
	}
}

// PendingRequests returns how many requests of the worker NextRequest
// has not returned yet.
func (d *Scheduler) PendingRequests(workerID map[string]string) int {
	name := WorkerKey(workerID)
	d.lock.Lock()
	defer d.lock.Unlock()
	return len(d.requests[name]) - d.cursors[name]
}

// Requests returns every request the worker has sent so far, in order,
// without moving NextRequest's cursor.
func (d *Scheduler) Requests(workerID map[string]string) []*remoteworker.SynchronizeRequest {
	d.lock.Lock()
	defer d.lock.Unlock()
	return append([]*remoteworker.SynchronizeRequest(nil), d.requests[WorkerKey(workerID)]...)
}

// WaitFor waits, in real time up to RealTimeLimit, until condition
// holds of the requests received so far from any worker (keyed by
// WorkerKey), and fails the test if it never does.
func (d *Scheduler) WaitFor(t testing.TB, what string, condition func(requests map[string][]*remoteworker.SynchronizeRequest, completions []Completion) bool) {
	t.Helper()
	limit := time.NewTimer(d.RealTimeLimit)
	defer limit.Stop()
	for {
		d.lock.Lock()
		changed := d.logChanged
		ok := condition(d.requests, d.completions)
		d.lock.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-limit.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Completed returns the completions recorded so far.
func (d *Scheduler) Completed() []Completion {
	d.lock.Lock()
	defer d.lock.Unlock()
	return append([]Completion(nil), d.completions...)
}
