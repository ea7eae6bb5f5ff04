package cluster

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/buildbarn/bb-storage/pkg/clock"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// slot is one execution slot: a worker ID of its own, at most one
// action at a time, and a loop of Synchronize calls that reports what
// it is doing and applies what the scheduler wants. The slot's fields
// are touched by its own goroutine only; the running action talks to
// it through an execution.
type slot struct {
	operationQueue      remoteworker.OperationQueueClient
	executor            worker.Executor
	clock               clock.Clock
	logger              *slog.Logger
	instanceNamePatcher digest.InstanceNamePatcher
	workerTimeout       time.Duration
	stageReportDelay    time.Duration
	backoff             *backoff

	// request is resent on every call with CurrentState and
	// PreferBeingIdle brought up to date.
	request               remoteworker.SynchronizeRequest
	nextSynchronizationAt time.Time
	// schedulerMayThinkExecutingUntil is set from the moment a call
	// may have handed this slot an action (even a call that failed:
	// its response may be what got lost) until the scheduler tells us
	// it expects nothing from us. Past it, the scheduler has forgotten
	// us anyway. A draining slot may stop only when it is unset or past.
	schedulerMayThinkExecutingUntil time.Time
	// execution is the action running now, or nil.
	execution *execution

	// failing mirrors bitzel_cluster_slots_failing for this slot.
	failing bool
	// synchronizing (a call has been made while running) and
	// failingNow (the latest call that ended failed) are read by
	// Client.Ready from other goroutines.
	synchronizing atomic.Bool
	failingNow    atomic.Bool
}

func newSlot(operationQueue remoteworker.OperationQueueClient, executor worker.Executor, options *Options, workerID map[string]string, platform *remoteexecution.Platform) *slot {
	return &slot{
		operationQueue:      operationQueue,
		executor:            executor,
		clock:               options.Clock,
		logger:              options.Logger.With("worker", workerName(workerID)),
		instanceNamePatcher: digest.NewInstanceNamePatcher(digest.EmptyInstanceName, options.InstanceNamePrefix),
		workerTimeout:       options.WorkerTimeout,
		stageReportDelay:    options.StageReportDelay,
		backoff:             newBackoff(options.InitialBackoff, options.MaximumBackoff, options.Random),
		request: remoteworker.SynchronizeRequest{
			WorkerId:           workerID,
			InstanceNamePrefix: options.InstanceNamePrefix.String(),
			Platform:           platform,
			SizeClass:          options.SizeClass,
			CurrentState:       idleState(),
		},
		nextSynchronizationAt: options.Clock.Now(),
	}
}

// run synchronizes until ctx is done and the slot has drained: its
// action finished and reported, and the scheduler told that this slot
// wants no more work.
func (s *slot) run(ctx context.Context) {
	slotsGauge.Inc()
	defer func() {
		slotsGauge.Dec()
		s.setFailing(false)
		s.synchronizing.Store(false)
	}()
	for {
		draining := ctx.Err() != nil
		if draining && s.mayStop() {
			if s.execution != nil {
				// The scheduler has been out of reach for
				// longer than it keeps our task; nobody will
				// ever read the result.
				s.logger.Warn("Scheduler unreachable while draining; abandoning the running action", "action", actionName(s.execution.actionDigest))
				s.stopExecution()
			}
			s.logger.Info("Drained")
			return
		}
		if !s.waitUntilDue(ctx, draining) {
			continue
		}
		s.updateCurrentState()

		draining = ctx.Err() != nil
		err := s.synchronize(ctx, draining)
		if err == nil {
			s.backoff.reset()
			s.setFailing(false)
			continue
		}
		if !draining && ctx.Err() != nil {
			// Shutdown cut the call short (typically an idle
			// call the scheduler was holding open). Not a
			// failure: go round again, this time draining.
			continue
		}
		synchronizationErrors.WithLabelValues(status.Code(err).String()).Inc()
		s.setFailing(true)
		delay := s.backoff.next()
		s.logger.Warn("Synchronizing with the scheduler failed", "error", err, "retry_in", delay)
		s.waitForRetry(ctx, draining, delay)
	}
}

// mayStop tells whether no scheduler can be waiting on this slot.
func (s *slot) mayStop() bool {
	return s.schedulerMayThinkExecutingUntil.IsZero() || s.clock.Now().After(s.schedulerMayThinkExecutingUntil)
}

func (s *slot) touchSchedulerMayThinkExecuting() {
	base := s.nextSynchronizationAt
	if now := s.clock.Now(); now.After(base) {
		base = now
	}
	s.schedulerMayThinkExecutingUntil = base.Add(s.workerTimeout)
}

// waitUntilDue waits for the next Synchronize call to be due:
// next_synchronization_at as the scheduler asked, or earlier when the
// running action has news. It returns false when shutdown interrupted
// an idle wait, so that the caller re-evaluates.
func (s *slot) waitUntilDue(ctx context.Context, draining bool) bool {
	var news <-chan struct{}
	var shutdown <-chan struct{}
	if s.execution != nil {
		// Shutdown does not hurry a running action: the
		// scheduler learns of the drain on the next report.
		news = s.execution.changed
	} else if draining {
		// Idle or holding a result, with the scheduler maybe
		// waiting for either: say so now, then stop.
		return true
	} else {
		shutdown = ctx.Done()
	}

	delay := s.nextSynchronizationAt.Sub(s.clock.Now())
	if delay <= 0 {
		return true
	}
	timer, expired := s.clock.NewTimer(delay)
	defer timer.Stop()
	// A stage change is held back for up to stageReportDelay: an
	// action that completes in the meantime is reported once, with
	// its result, instead of once per stage. Each Synchronize costs
	// this worker and the scheduler a round trip, and most actions
	// are over before a stage report would be of use to anyone.
	var held <-chan time.Time
	for {
		select {
		case <-expired:
			return true
		case <-news:
			if s.stageReportDelay <= 0 || s.execution.completed() {
				return true
			}
			if held == nil {
				holdTimer, holdExpired := s.clock.NewTimer(s.stageReportDelay)
				defer holdTimer.Stop()
				held = holdExpired
			}
		case <-held:
			return true
		case <-shutdown:
			return false
		}
	}
}

// waitForRetry waits out a backoff delay. Shutdown interrupts it; while
// draining, the delay is cut at the moment the scheduler forgets us,
// when the slot may stop.
func (s *slot) waitForRetry(ctx context.Context, draining bool, delay time.Duration) {
	var shutdown <-chan struct{}
	if draining {
		if until := s.schedulerMayThinkExecutingUntil; !until.IsZero() {
			if left := until.Sub(s.clock.Now()) + time.Nanosecond; left < delay {
				delay = left
			}
		}
	} else {
		shutdown = ctx.Done()
	}
	if delay <= 0 {
		return
	}
	timer, expired := s.clock.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-expired:
	case <-shutdown:
	}
}

// updateCurrentState copies the running action's latest state into the
// request, and lets go of the action once it has completed (the result
// stays in the request until the scheduler has taken it).
func (s *slot) updateCurrentState() {
	if s.execution == nil {
		return
	}
	select {
	case <-s.execution.changed:
	default:
	}
	state, completed := s.execution.currentState()
	s.request.CurrentState = &remoteworker.CurrentState{
		WorkerState: &remoteworker.CurrentState_Executing_{Executing: state},
	}
	if completed {
		actionsCompleted.WithLabelValues(completionOutcome(state.GetCompleted())).Inc()
		slotsExecuting.Dec()
		s.execution.release()
		s.execution = nil
	}
}

func (s *slot) setFailing(failing bool) {
	s.failingNow.Store(failing)
	if failing != s.failing {
		s.failing = failing
		if failing {
			slotsFailing.Inc()
		} else {
			slotsFailing.Dec()
		}
	}
}

// synchronize makes one Synchronize call and applies the answer.
func (s *slot) synchronize(ctx context.Context, draining bool) error {
	// While draining, ask for no more work. The scheduler then
	// answers at once, so the call can be bounded; it must not carry
	// the (done) shutdown context or it would never leave.
	s.request.PreferBeingIdle = draining
	callCtx := ctx
	if draining {
		var cancel context.CancelFunc
		callCtx, cancel = s.clock.NewContextWithTimeout(context.Background(), s.workerTimeout)
		defer cancel()
	}

	synchronizations.Inc()
	s.synchronizing.Store(true)
	response, err := s.operationQueue.Synchronize(callCtx, &s.request)
	if err != nil {
		if s.schedulerMayThinkExecutingUntil.IsZero() && !isRefusal(err) {
			// The scheduler may have handed us an action in
			// the response that got lost.
			s.touchSchedulerMayThinkExecuting()
		}
		return util.StatusWrap(err, "Failed to synchronize with scheduler")
	}
	if err := response.NextSynchronizationAt.CheckValid(); err != nil {
		if s.schedulerMayThinkExecutingUntil.IsZero() {
			s.touchSchedulerMayThinkExecuting()
		}
		return util.StatusWrapWithCode(err, codes.Internal, "Scheduler sent an invalid next_synchronization_at")
	}
	s.nextSynchronizationAt = response.NextSynchronizationAt.AsTime()

	switch desired := response.DesiredState.GetWorkerState().(type) {
	case nil:
		// Carry on as reported.
		if s.execution != nil {
			s.touchSchedulerMayThinkExecuting()
		} else {
			s.schedulerMayThinkExecutingUntil = time.Time{}
		}
		return nil
	case *remoteworker.DesiredState_Idle:
		// Also how the scheduler cancels: its clients no longer
		// want the action.
		s.stopExecution()
		s.schedulerMayThinkExecutingUntil = time.Time{}
		return nil
	case *remoteworker.DesiredState_Executing_:
		return s.startExecution(desired.Executing)
	default:
		return status.Errorf(codes.Internal, "Scheduler sent an unknown desired state %T", desired)
	}
}

// isRefusal tells whether a failed call was answered by the scheduler
// with a verdict on the request (a wrong size class, a bad instance
// name, no permission), as opposed to a failure on the way (connection
// lost, timeout, a response too large to receive) after which the
// scheduler may have assigned us work that we never heard of. Codes
// that gRPC also produces on the client side count as failures.
func isRefusal(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange,
		codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented,
		codes.NotFound, codes.AlreadyExists:
		return true
	}
	return false
}

// startExecution replaces whatever the slot is doing with the action
// the scheduler assigned.
func (s *slot) startExecution(desired *remoteworker.DesiredState_Executing) error {
	if desired.ActionDigest == nil {
		// Without a digest no result can be reported for it.
		// Staying in the current state makes the scheduler
		// retry and eventually fail the task itself.
		return status.Error(codes.InvalidArgument, "Scheduler assigned an action without an action digest")
	}
	s.stopExecution()
	s.touchSchedulerMayThinkExecuting()

	a, err := newAssignment(s.instanceNamePatcher, desired)
	if err != nil {
		// It can never run; tell the client why right away
		// rather than let the scheduler retry it on every worker.
		s.logger.Warn("Rejecting assigned action", "action", actionName(desired.ActionDigest), "error", err)
		actionsCompleted.WithLabelValues(outcomeRejected).Inc()
		s.request.CurrentState = &remoteworker.CurrentState{
			WorkerState: &remoteworker.CurrentState_Executing_{Executing: &remoteworker.CurrentState_Executing{
				ActionDigest: desired.ActionDigest,
				ExecutionState: &remoteworker.CurrentState_Executing_Completed{Completed: &remoteexecution.ExecuteResponse{
					Status: status.Convert(err).Proto(),
				}},
			}},
		}
		s.nextSynchronizationAt = s.clock.Now()
		return nil
	}

	s.logger.Debug("Starting action", "action", a.request.ActionDigest.String())
	s.execution = startExecution(s.executor, a, s.logger)
	slotsExecuting.Inc()
	// Acknowledge the assignment before the next scheduled
	// synchronization: within StageReportDelay, or with the result
	// if that comes first.
	s.execution.signal()
	s.request.CurrentState = &remoteworker.CurrentState{
		WorkerState: &remoteworker.CurrentState_Executing_{Executing: &remoteworker.CurrentState_Executing{
			ActionDigest:   desired.ActionDigest,
			ExecutionState: &remoteworker.CurrentState_Executing_Started{Started: &emptypb.Empty{}},
		}},
	}
	return nil
}

// stopExecution abandons the running action, if any, waits for the
// Executor to return, and makes the slot idle.
func (s *slot) stopExecution() {
	if s.execution != nil {
		s.logger.Info("Abandoning action", "action", actionName(s.execution.actionDigest))
		s.execution.abandon()
		s.execution = nil
		actionsCompleted.WithLabelValues(outcomeAbandoned).Inc()
		slotsExecuting.Dec()
	}
	s.request.CurrentState = idleState()
}

func idleState() *remoteworker.CurrentState {
	return &remoteworker.CurrentState{WorkerState: &remoteworker.CurrentState_Idle{Idle: &emptypb.Empty{}}}
}

func actionName(d *remoteexecution.Digest) string {
	return d.GetHash() + "-" + strconv.FormatInt(d.GetSizeBytes(), 10)
}
