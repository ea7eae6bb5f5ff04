package cluster_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/worker"
	"github.com/bitzel/bitzel-worker/worker/cluster"
	"github.com/bitzel/bitzel-worker/worker/cluster/schedulertest"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The platform as an operator might write it, and as REAPI orders it.
var (
	configuredPlatform = &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{
		{Name: "OSFamily", Value: "linux"},
		{Name: "ISA", Value: "x86-64"},
		{Name: "ISA", Value: "aarch64"},
	}}
	sortedPlatform = &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{
		{Name: "ISA", Value: "aarch64"},
		{Name: "ISA", Value: "x86-64"},
		{Name: "OSFamily", Value: "linux"},
	}}
)

func testAction(name string) (*remoteexecution.Digest, *remoteexecution.Action) {
	return sha256Digest("action " + name), &remoteexecution.Action{
		CommandDigest:   sha256Digest("command " + name),
		InputRootDigest: sha256Digest("root " + name),
		Timeout:         durationpb.New(time.Minute),
	}
}

func TestReportsEveryStageInOrderThenTheResult(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 4)
	h := newHarness(t, clock, d)
	workerID := map[string]string{"hostname": "builder1"}
	h.start(cluster.Options{
		WorkerID:           workerID,
		InstanceNamePrefix: mustInstanceName(t, "main"),
		Platform:           configuredPlatform,
		SizeClass:          2,
		Concurrency:        1,
	})

	request := expectRequest(t, d, workerID, "idle", false)
	if request.InstanceNamePrefix != "main" || request.SizeClass != 2 {
		t.Errorf("registered with prefix %q, size class %d", request.InstanceNamePrefix, request.SizeClass)
	}
	if !proto.Equal(request.Platform, sortedPlatform) {
		// The scheduler would file the worker under another
		// platform queue and never give it this work.
		t.Fatalf("platform sent as %v, want sorted %v", request.Platform, sortedPlatform)
	}

	actionDigest, action := testAction("compile")
	auxiliary, err := anypb.New(&remoteexecution.RequestMetadata{ToolInvocationId: "invocation"})
	if err != nil {
		t.Fatal(err)
	}
	queued := d.Enqueue(&schedulertest.Task{
		InstanceName:   "main/team",
		ActionDigest:   actionDigest,
		Action:         action,
		DigestFunction: remoteexecution.DigestFunction_SHA256,
		Auxiliary:      []*anypb.Any{auxiliary},
	})

	call := h.executor.nextCall(t)
	if got := call.request.InstanceName.String(); got != "main/team" {
		t.Errorf("Execute got instance name %q, want main/team", got)
	}
	if got := call.request.DigestFunction; got.GetEnumValue() != remoteexecution.DigestFunction_SHA256 || got.GetInstanceName().String() != "main/team" {
		t.Errorf("Execute got digest function %s for %q", got.GetEnumValue(), got.GetInstanceName())
	}
	if !proto.Equal(call.request.ActionDigest.GetProto(), actionDigest) || !proto.Equal(call.request.Action, action) {
		t.Errorf("Execute got action %s %v", call.request.ActionDigest, call.request.Action)
	}
	if !call.request.SkipCacheLookup {
		t.Error("Execute was asked to look in the AC, which the scheduler has done already")
	}

	// Fake time never moves in this test, so every report below is
	// sent because the stage changed, not because a timer fired.
	expectRequest(t, d, workerID, "started", false)
	for _, step := range []struct {
		stage worker.Stage
		name  string
	}{
		{worker.StageFetchingInputs, "fetching_inputs"},
		{worker.StageRunning, "running"},
		{worker.StageUploadingOutputs, "uploading_outputs"},
	} {
		call.report(t, step.stage)
		request := expectRequest(t, d, workerID, step.name, false)
		if !proto.Equal(request.CurrentState.GetExecuting().GetActionDigest(), actionDigest) {
			t.Errorf("%s reported for action %v", step.name, request.CurrentState.GetExecuting().GetActionDigest())
		}
	}

	call.complete(t, okResponse(3))
	response := completedResponse(expectRequest(t, d, workerID, "completed", false))
	if response.GetResult().GetExitCode() != 3 || response.Result.ExecutionMetadata.GetWorker() != "fake" {
		t.Errorf("completed with %v", response)
	}
	if !proto.Equal(response.Result.ExecutionMetadata.QueuedTimestamp, queued.Queued) {
		t.Errorf("queued_timestamp %v, want the scheduler's %v", response.Result.ExecutionMetadata.QueuedTimestamp, queued.Queued)
	}
	if metadata := response.Result.ExecutionMetadata.AuxiliaryMetadata; len(metadata) != 1 || !proto.Equal(metadata[0], auxiliary) {
		t.Errorf("auxiliary_metadata %v, want the scheduler's", metadata)
	}
	completions := d.Completed()
	if len(completions) != 1 || !proto.Equal(completions[0].Digest, actionDigest) || !proto.Equal(completions[0].Response, response) {
		t.Errorf("scheduler recorded %v", completions)
	}
	if d.PendingRequests(workerID) != 0 {
		t.Errorf("%d requests after the completion, which the scheduler holds open", d.PendingRequests(workerID))
	}
}

func TestSchedulerGoingIdleCancelsTheRunningAction(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, d)
	workerID := map[string]string{"hostname": "builder1"}
	h.start(cluster.Options{WorkerID: workerID, Platform: configuredPlatform, Concurrency: 1})
	expectRequest(t, d, workerID, "idle", false)

	actionDigest, action := testAction("long")
	running := d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	call := h.executor.nextCall(t)
	expectRequest(t, d, workerID, "started", false)
	call.report(t, worker.StageRunning)
	expectRequest(t, d, workerID, "running", false)

	// The clients went away. The worker learns it at its next
	// scheduled synchronization, busyInterval after the last one.
	d.Cancel(running)
	clock.waitForTimerOf(t, d.BusyInterval)
	clock.advance(d.BusyInterval)
	expectRequest(t, d, workerID, "running", false)

	call.waitReturned(t)
	if call.ctxErr != context.Canceled {
		t.Errorf("Execute's context ended with %v, want it cancelled", call.ctxErr)
	}
	expectRequest(t, d, workerID, "idle", false)
	if completions := d.Completed(); len(completions) != 0 {
		t.Errorf("abandoned action was reported: %v", completions)
	}

	// And the slot is usable again.
	nextDigest, nextAction := testAction("next")
	d.Enqueue(&schedulertest.Task{ActionDigest: nextDigest, Action: nextAction, DigestFunction: remoteexecution.DigestFunction_SHA256})
	next := h.executor.nextCall(t)
	if !proto.Equal(next.request.ActionDigest.GetProto(), nextDigest) {
		t.Errorf("then executed %s", next.request.ActionDigest)
	}
}

func TestDrainFinishesTheRunningActionAndTakesNoMoreWork(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, d)
	busyID := map[string]string{"hostname": "builder1", "thread": "0"}
	idleID := map[string]string{"hostname": "builder1", "thread": "1"}
	r := h.start(cluster.Options{WorkerID: map[string]string{"hostname": "builder1"}, Platform: configuredPlatform, Concurrency: 2})
	expectRequest(t, d, busyID, "idle", false)
	expectRequest(t, d, idleID, "idle", false)

	actionDigest, action := testAction("drained")
	d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	call := h.executor.nextCall(t)
	// Which slot took it is up to the double: the one that reports.
	if d.FirstToRequest(t, busyID, idleID)["thread"] != busyID["thread"] {
		busyID, idleID = idleID, busyID
	}
	expectRequest(t, d, busyID, "started", false)

	r.cancel()
	// The idle slot's held call is cut short; it says it wants no
	// work and stops.
	expectRequest(t, d, idleID, "idle", true)

	// Work queued now must stay queued: the whole worker is draining.
	otherDigest, otherAction := testAction("not taken")
	d.Enqueue(&schedulertest.Task{ActionDigest: otherDigest, Action: otherAction, DigestFunction: remoteexecution.DigestFunction_SHA256})

	call.report(t, worker.StageUploadingOutputs)
	expectRequest(t, d, busyID, "uploading_outputs", true)
	if r.returned() {
		t.Fatal("Run returned while an action was still running")
	}
	call.complete(t, okResponse(0))
	request := expectRequest(t, d, busyID, "completed", true)
	if response := completedResponse(request); response.GetStatus().GetCode() != 0 || response.GetResult().GetExecutionMetadata().GetWorker() != "fake" {
		t.Errorf("completed with %v", response)
	}
	r.waitReturned(t)

	if call.ctxErr != nil {
		t.Errorf("draining cancelled the action: %v", call.ctxErr)
	}
	if completions := d.Completed(); len(completions) != 1 || !proto.Equal(completions[0].Digest, actionDigest) {
		t.Errorf("scheduler recorded %v", completions)
	}
	if d.Queued() != 1 {
		t.Errorf("%d tasks left queued, want the one queued during the drain", d.Queued())
	}
	h.executor.expectNoCall(t)
}

func TestReconnectsWithExponentialBackoffAfterSchedulerRestart(t *testing.T) {
	clock := newFakeClock()
	first := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, first)
	workerID := map[string]string{"hostname": "builder1"}
	const initial, maximum = time.Second, 8 * time.Second
	h.start(cluster.Options{
		WorkerID:       workerID,
		Platform:       configuredPlatform,
		Concurrency:    1,
		InitialBackoff: initial,
		MaximumBackoff: maximum,
	})
	expectRequest(t, first, workerID, "idle", false)

	h.scheduler.stop()
	// Each failure waits longer, from the upper half of a ceiling
	// that doubles up to the maximum.
	for i, ceiling := range []time.Duration{1, 2, 4, 8, 8, 8} {
		ceiling *= time.Second
		delay := clock.waitForTimer(t)
		if delay < ceiling/2 || delay > ceiling {
			t.Fatalf("retry %d waits %s, want within [%s, %s]", i, delay, ceiling/2, ceiling)
		}
		clock.advance(delay)
	}

	// The scheduler is back, with no memory of us. Retry until the
	// connection is up again (gRPC reconnects in real time).
	second := schedulertest.New(clock, sortedPlatform, 0)
	h.scheduler.start(second)
	deadline := time.Now().Add(realTimeLimit)
	for {
		if time.Now().After(deadline) {
			t.Fatal("worker did not come back to the restarted scheduler")
		}
		delay, retrying := clock.waitForTimerOr(t, second.HasPendingRequests(workerID))
		if !retrying {
			break
		}
		if delay > maximum {
			t.Fatalf("retry waits %s, beyond the maximum %s", delay, maximum)
		}
		clock.advance(delay)
	}
	expectRequest(t, second, workerID, "idle", false)

	actionDigest, action := testAction("after restart")
	second.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	call := h.executor.nextCall(t)
	expectRequest(t, second, workerID, "started", false)
	call.complete(t, okResponse(0))
	expectRequest(t, second, workerID, "completed", false)

	// Success reset the backoff: the next outage starts small again.
	h.scheduler.stop()
	if delay := clock.waitForTimer(t); delay < initial/2 || delay > initial {
		t.Errorf("first retry after a success waits %s, want within [%s, %s]", delay, initial/2, initial)
	}
}

func TestWrongSizeClassIsRefusedAndRetriedWithoutTakingWork(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 4)
	h := newHarness(t, clock, d)
	tooBig := map[string]string{"hostname": "big"}
	fits := map[string]string{"hostname": "fits"}
	const initial = time.Second
	wrong := h.start(cluster.Options{WorkerID: tooBig, Platform: configuredPlatform, SizeClass: 8, Concurrency: 1, InitialBackoff: initial, MaximumBackoff: 4 * time.Second})
	expectRequest(t, d, tooBig, "idle", false)

	// Refused: the slot backs off rather than hammering the scheduler,
	// and keeps trying in case the scheduler's configuration changes.
	for i, ceiling := range []time.Duration{1, 2, 4, 4} {
		ceiling *= time.Second
		delay := clock.waitForTimer(t)
		if delay < ceiling/2 || delay > ceiling {
			t.Fatalf("retry %d after refusal waits %s, want within [%s, %s]", i, delay, ceiling/2, ceiling)
		}
		clock.advance(delay)
		if request := expectRequest(t, d, tooBig, "idle", false); request.SizeClass != 8 {
			t.Fatalf("retried with size class %d", request.SizeClass)
		}
	}

	// A worker of a size the queue knows gets the work.
	h.start(cluster.Options{WorkerID: fits, Platform: configuredPlatform, SizeClass: 4, Concurrency: 1})
	expectRequest(t, d, fits, "idle", false)
	actionDigest, action := testAction("sized")
	d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	call := h.executor.nextCall(t)
	expectRequest(t, d, fits, "started", false)
	call.complete(t, okResponse(0))
	if c := expectRequest(t, d, fits, "completed", false); !proto.Equal(c.CurrentState.GetExecuting().GetActionDigest(), actionDigest) {
		t.Errorf("completed %v", c.CurrentState.GetExecuting().GetActionDigest())
	}
	h.executor.expectNoCall(t)

	// The refused worker shuts down promptly: the scheduler never
	// accepted it, so nothing can be waiting on it.
	clock.waitForTimer(t)
	wrong.cancel()
	wrong.waitReturned(t)
}

func TestInstanceNameIsPrefixPlusSuffixAndDigestFunctionComesFromTheScheduler(t *testing.T) {
	blake3Digest := &remoteexecution.Digest{Hash: sha256Digest("blake3").Hash, SizeBytes: 6}
	sha1Digest := &remoteexecution.Digest{Hash: "0123456789abcdef0123456789abcdef01234567", SizeBytes: 5}
	for _, c := range []struct {
		name                string
		prefix              string
		taskInstanceName    string
		digest              *remoteexecution.Digest
		digestFunction      remoteexecution.DigestFunction_Value
		wantInstanceName    string
		wantDigestFunction  remoteexecution.DigestFunction_Value
		wantInvalidArgument bool
	}{
		{"suffix appended", "main", "main/team/a", sha256Digest("a"), remoteexecution.DigestFunction_SHA256, "main/team/a", remoteexecution.DigestFunction_SHA256, false},
		{"no suffix", "main", "main", sha256Digest("b"), remoteexecution.DigestFunction_SHA256, "main", remoteexecution.DigestFunction_SHA256, false},
		{"no prefix", "", "team/c", sha256Digest("c"), remoteexecution.DigestFunction_SHA256, "team/c", remoteexecution.DigestFunction_SHA256, false},
		// Same hash length as SHA-256: only the scheduler's word tells.
		{"BLAKE3 as sent", "main", "main/x", blake3Digest, remoteexecution.DigestFunction_BLAKE3, "main/x", remoteexecution.DigestFunction_BLAKE3, false},
		{"unset, inferred from hash length", "main", "main", sha1Digest, remoteexecution.DigestFunction_UNKNOWN, "main", remoteexecution.DigestFunction_SHA1, false},
		{"invalid suffix", "main", "main/a//b", sha256Digest("d"), remoteexecution.DigestFunction_SHA256, "", 0, true},
		{"digest not of the digest function", "main", "main", sha1Digest, remoteexecution.DigestFunction_SHA256, "", 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			clock := newFakeClock()
			d := schedulertest.New(clock, sortedPlatform, 0)
			h := newHarness(t, clock, d)
			workerID := map[string]string{"hostname": "builder1"}
			h.start(cluster.Options{WorkerID: workerID, InstanceNamePrefix: mustInstanceName(t, c.prefix), Platform: configuredPlatform, Concurrency: 1})
			if request := expectRequest(t, d, workerID, "idle", false); request.InstanceNamePrefix != c.prefix {
				t.Fatalf("announced prefix %q", request.InstanceNamePrefix)
			}
			d.Enqueue(&schedulertest.Task{InstanceName: c.taskInstanceName, ActionDigest: c.digest, Action: &remoteexecution.Action{}, DigestFunction: c.digestFunction})

			if c.wantInvalidArgument {
				// Reported to the client at once, never run.
				request := expectRequest(t, d, workerID, "completed", false)
				if code := status.FromProto(completedResponse(request).GetStatus()).Code(); code != codes.InvalidArgument {
					t.Errorf("completed with %v, want INVALID_ARGUMENT", completedResponse(request).GetStatus())
				}
				if !proto.Equal(request.CurrentState.GetExecuting().GetActionDigest(), c.digest) {
					t.Errorf("rejected %v", request.CurrentState.GetExecuting().GetActionDigest())
				}
				h.executor.expectNoCall(t)
				return
			}
			call := h.executor.nextCall(t)
			if got := call.request.InstanceName.String(); got != c.wantInstanceName {
				t.Errorf("instance name %q, want %q", got, c.wantInstanceName)
			}
			if got := call.request.DigestFunction.GetEnumValue(); got != c.wantDigestFunction {
				t.Errorf("digest function %s, want %s", got, c.wantDigestFunction)
			}
			if got := call.request.DigestFunction.GetInstanceName().String(); got != c.wantInstanceName {
				t.Errorf("digest function bound to %q, want %q", got, c.wantInstanceName)
			}
			if got := call.request.ActionDigest; got.GetHashString() != c.digest.Hash || got.GetSizeBytes() != c.digest.SizeBytes {
				t.Errorf("action digest %s", got)
			}
		})
	}
}

func TestNextSynchronizationAtIsHonoured(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	// A scheduler that answers idle workers at once and tells them
	// when to come back, rather than holding the call open.
	d.IdleInterval = 7 * time.Second
	d.BusyInterval = 13 * time.Second
	h := newHarness(t, clock, d)
	workerID := map[string]string{"hostname": "builder1"}
	h.start(cluster.Options{WorkerID: workerID, Platform: configuredPlatform, Concurrency: 1})
	expectRequest(t, d, workerID, "idle", false)

	// Nothing can wake the idle slot but its timer, so checking the
	// request log right after moving time is exact, not a race.
	clock.waitForTimerOf(t, d.IdleInterval)
	clock.advance(d.IdleInterval - time.Millisecond)
	if n := d.PendingRequests(workerID); n != 0 {
		t.Fatalf("%d requests before next_synchronization_at", n)
	}
	if pending := clock.pendingTimers(); len(pending) != 1 || pending[0] != d.IdleInterval {
		t.Fatalf("pending timers %v", pending)
	}
	actionDigest, action := testAction("timed")
	d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	clock.advance(time.Millisecond)
	expectRequest(t, d, workerID, "idle", false)

	// While executing without news, the slot reports again exactly
	// at next_synchronization_at.
	call := h.executor.nextCall(t)
	expectRequest(t, d, workerID, "started", false)
	clock.waitForTimerOf(t, d.BusyInterval)
	clock.advance(d.BusyInterval - time.Millisecond)
	if n := d.PendingRequests(workerID); n != 0 {
		t.Fatalf("%d requests before next_synchronization_at", n)
	}
	clock.advance(time.Millisecond)
	expectRequest(t, d, workerID, "started", false)

	// News comes before the schedule.
	clock.waitForTimerOf(t, d.BusyInterval)
	call.report(t, worker.StageRunning)
	expectRequest(t, d, workerID, "running", false)
}

func TestEachSlotHasItsOwnWorkerIDAndRunsInParallel(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, d)
	h.start(cluster.Options{WorkerID: map[string]string{"hostname": "builder1", "pod": "p"}, Platform: configuredPlatform, Concurrency: 3})
	var ids []map[string]string
	for _, thread := range []string{"0", "1", "2"} {
		id := map[string]string{"hostname": "builder1", "pod": "p", "thread": thread}
		expectRequest(t, d, id, "idle", false)
		ids = append(ids, id)
	}

	var calls []*executeCall
	for _, name := range []string{"a", "b", "c"} {
		actionDigest, action := testAction(name)
		d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	}
	for range 3 {
		// All three are running at once before any finishes.
		calls = append(calls, h.executor.nextCall(t))
	}
	for _, id := range ids {
		expectRequest(t, d, id, "started", false)
	}
	for _, call := range calls {
		call.complete(t, okResponse(0))
	}
	workers := map[string]bool{}
	for _, id := range ids {
		expectRequest(t, d, id, "completed", false)
	}
	for _, c := range d.Completed() {
		workers[c.Worker] = true
	}
	if len(workers) != 3 {
		t.Errorf("completions came from %d workers, want 3: %v", len(workers), workers)
	}
}

func TestExecutorFailuresBecomeResults(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, d)
	workerID := map[string]string{"hostname": "builder1"}
	h.start(cluster.Options{WorkerID: workerID, Platform: configuredPlatform, Concurrency: 1})
	expectRequest(t, d, workerID, "idle", false)

	panicking, action := testAction("panics")
	d.Enqueue(&schedulertest.Task{ActionDigest: panicking, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	call := h.executor.nextCall(t)
	expectRequest(t, d, workerID, "started", false)
	call.panic(t, "bug")
	request := expectRequest(t, d, workerID, "completed", false)
	if code := status.FromProto(completedResponse(request).GetStatus()).Code(); code != codes.Internal {
		t.Errorf("a panicking Executor completed with %v, want INTERNAL", completedResponse(request).GetStatus())
	}

	silent, action := testAction("nil")
	d.Enqueue(&schedulertest.Task{ActionDigest: silent, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	call = h.executor.nextCall(t)
	expectRequest(t, d, workerID, "started", false)
	call.complete(t, nil)
	request = expectRequest(t, d, workerID, "completed", false)
	if code := status.FromProto(completedResponse(request).GetStatus()).Code(); code != codes.Internal {
		t.Errorf("a nil response completed with %v, want INTERNAL", completedResponse(request).GetStatus())
	}
}

func TestDrainGivesUpOnUnreachableSchedulerOnceItHasForgottenUs(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, d)
	workerID := map[string]string{"hostname": "builder1"}
	const workerTimeout = time.Minute
	r := h.start(cluster.Options{WorkerID: workerID, Platform: configuredPlatform, Concurrency: 1, WorkerTimeout: workerTimeout, InitialBackoff: time.Second, MaximumBackoff: 4 * time.Second})
	expectRequest(t, d, workerID, "idle", false)
	actionDigest, action := testAction("orphan")
	d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	call := h.executor.nextCall(t)
	expectRequest(t, d, workerID, "started", false)
	lastContact := clock.Now()

	h.scheduler.stop()
	r.cancel()
	call.complete(t, okResponse(0))
	// The result cannot be delivered. Keep trying while the scheduler
	// may still want it: until WorkerTimeout past the
	// next_synchronization_at it gave.
	giveUp := lastContact.Add(d.BusyInterval + workerTimeout)
	for {
		delay, retrying := clock.waitForTimerOr(t, r.hasReturned)
		if !retrying {
			break
		}
		if clock.Now().After(giveUp.Add(4 * time.Second)) {
			t.Fatalf("still retrying at %s, past %s", clock.Now(), giveUp)
		}
		clock.advance(delay)
	}
	if clock.Now().Before(giveUp) {
		t.Errorf("gave up at %s, before the scheduler would have forgotten us at %s", clock.Now(), giveUp)
	}
	r.waitReturned(t)
}

func TestRunIsSingleUse(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, d)
	client, err := cluster.NewClient(h.queue, h.executor, cluster.Options{Concurrency: 1, Clock: clock, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Shut down before it started: nothing was ever assigned, so
	// there is nothing to drain.
	if err := client.Run(ctx); err != nil {
		t.Fatalf("first Run returned %v", err)
	}
	if err := client.Run(ctx); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second Run returned %v, want FAILED_PRECONDITION", err)
	}
	if n := d.PendingRequests(map[string]string{}); n != 0 {
		t.Errorf("a worker shut down before starting sent %d requests", n)
	}
}

func TestAShortActionIsReportedOnceWithItsResult(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, d)
	workerID := map[string]string{"hostname": "builder1"}
	h.start(cluster.Options{WorkerID: workerID, Platform: configuredPlatform, Concurrency: 1, StageReportDelay: time.Second})
	expectRequest(t, d, workerID, "idle", false)

	actionDigest, action := testAction("short")
	d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	call := h.executor.nextCall(t)
	// The acknowledgement is held back: a timer of the delay runs.
	clock.waitForTimerOf(t, time.Second)
	for _, stage := range []worker.Stage{worker.StageFetchingInputs, worker.StageRunning, worker.StageUploadingOutputs} {
		call.report(t, stage)
	}
	call.complete(t, okResponse(0))

	// Fake time stood still: the result went out because it came,
	// and no stage went out before it.
	expectRequest(t, d, workerID, "completed", false)
	if completions := d.Completed(); len(completions) != 1 || !proto.Equal(completions[0].Digest, actionDigest) {
		t.Errorf("scheduler recorded %v", completions)
	}
	if requests := d.Requests(workerID); len(requests) != 2 {
		t.Errorf("%d Synchronize calls for one short action, want 2 (idle, completed)", len(requests))
	}
}

func TestALongActionsStageIsReportedAfterTheDelay(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, d)
	workerID := map[string]string{"hostname": "builder1"}
	h.start(cluster.Options{WorkerID: workerID, Platform: configuredPlatform, Concurrency: 1, StageReportDelay: time.Second})
	expectRequest(t, d, workerID, "idle", false)

	actionDigest, action := testAction("long")
	d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	call := h.executor.nextCall(t)
	clock.waitForTimerOf(t, time.Second)
	// The fake executor observes a stage after handing it over;
	// a second hand-over of the same stage (no change, no news)
	// returns only once the first has been observed.
	call.report(t, worker.StageRunning)
	call.report(t, worker.StageRunning)

	// Nothing but the held-back report's timer can wake the slot
	// (the scheduler's next_synchronization_at is 10 s away), so the
	// request log right after moving time is exact.
	clock.advance(time.Second - time.Millisecond)
	if n := d.PendingRequests(workerID); n != 0 {
		t.Fatalf("%d requests before the stage report delay passed", n)
	}
	clock.advance(time.Millisecond)
	// The acknowledgement and the stage change go out together, as
	// the latest stage.
	request := expectRequest(t, d, workerID, "running", false)
	if !proto.Equal(request.CurrentState.GetExecuting().GetActionDigest(), actionDigest) {
		t.Errorf("running reported for action %v", request.CurrentState.GetExecuting().GetActionDigest())
	}

	// The next change is held back as long again; the result is not.
	clock.waitForTimerOf(t, d.BusyInterval)
	call.report(t, worker.StageUploadingOutputs)
	clock.waitForTimerOf(t, time.Second)
	call.complete(t, okResponse(0))
	expectRequest(t, d, workerID, "completed", false)
}

func TestAHeldBackStageStillGoesOutByNextSynchronizationAt(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, d)
	workerID := map[string]string{"hostname": "builder1"}
	// A delay past the scheduler's next_synchronization_at (10 s):
	// the scheduler's schedule wins, or it would take the worker for
	// gone.
	h.start(cluster.Options{WorkerID: workerID, Platform: configuredPlatform, Concurrency: 1, StageReportDelay: time.Minute})
	expectRequest(t, d, workerID, "idle", false)

	actionDigest, action := testAction("held")
	d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
	call := h.executor.nextCall(t)
	clock.waitForTimerOf(t, time.Minute)
	call.report(t, worker.StageRunning)
	call.report(t, worker.StageRunning)
	clock.advance(d.BusyInterval - time.Millisecond)
	if n := d.PendingRequests(workerID); n != 0 {
		t.Fatalf("%d requests before next_synchronization_at", n)
	}
	clock.advance(time.Millisecond)
	expectRequest(t, d, workerID, "running", false)
}
