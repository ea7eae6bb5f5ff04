package testsupport

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"google.golang.org/protobuf/types/known/emptypb"
)

func TestConcurrentlyCallsEachIndexOnceAtMostCAtATime(t *testing.T) {
	const c, n = 4, 200
	var mu sync.Mutex
	calls := make([]int, n)
	var running, most atomic.Int64
	var lastProgress atomic.Int64
	_, err := Concurrently(c, n, func(i int) error {
		now := running.Add(1)
		defer running.Add(-1)
		for {
			seen := most.Load()
			if now <= seen || most.CompareAndSwap(seen, now) {
				break
			}
		}
		mu.Lock()
		calls[i]++
		mu.Unlock()
		// Long enough for calls to overlap were there no limit.
		time.Sleep(time.Millisecond)
		return nil
	}, func(done int) {
		for {
			seen := lastProgress.Load()
			if int64(done) <= seen || lastProgress.CompareAndSwap(seen, int64(done)) {
				break
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, count := range calls {
		if count != 1 {
			t.Errorf("do(%d) called %d times", i, count)
		}
	}
	if most.Load() > c {
		t.Errorf("%d calls at once, want at most %d", most.Load(), c)
	}
	if lastProgress.Load() != n {
		t.Errorf("progress reached %d, want %d", lastProgress.Load(), n)
	}
}

func TestConcurrentlyStopsStartingCallsAfterAnError(t *testing.T) {
	failure := errors.New("action 3 failed")
	var started atomic.Int64
	_, err := Concurrently(1, 100, func(i int) error {
		started.Add(1)
		if i == 3 {
			return failure
		}
		return nil
	}, nil)
	if !errors.Is(err, failure) {
		t.Errorf("error %v, want %v", err, failure)
	}
	// One at a time: the calls after the failing one never start.
	if got := started.Load(); got != 4 {
		t.Errorf("%d calls started, want 4", got)
	}
}

func TestSynchronizeStageNamesEveryState(t *testing.T) {
	executing := func(executing *remoteworker.CurrentState_Executing) *remoteworker.SynchronizeRequest {
		return &remoteworker.SynchronizeRequest{CurrentState: &remoteworker.CurrentState{WorkerState: &remoteworker.CurrentState_Executing_{Executing: executing}}}
	}
	for want, request := range map[string]*remoteworker.SynchronizeRequest{
		"idle":              {CurrentState: &remoteworker.CurrentState{WorkerState: &remoteworker.CurrentState_Idle{Idle: &emptypb.Empty{}}}},
		"started":           executing(&remoteworker.CurrentState_Executing{ExecutionState: &remoteworker.CurrentState_Executing_Started{Started: &emptypb.Empty{}}}),
		"fetching_inputs":   executing(&remoteworker.CurrentState_Executing{ExecutionState: &remoteworker.CurrentState_Executing_FetchingInputs{FetchingInputs: &emptypb.Empty{}}}),
		"running":           executing(&remoteworker.CurrentState_Executing{ExecutionState: &remoteworker.CurrentState_Executing_Running{Running: &emptypb.Empty{}}}),
		"uploading_outputs": executing(&remoteworker.CurrentState_Executing{ExecutionState: &remoteworker.CurrentState_Executing_UploadingOutputs{UploadingOutputs: &emptypb.Empty{}}}),
		"completed":         executing(&remoteworker.CurrentState_Executing{ExecutionState: &remoteworker.CurrentState_Executing_Completed{}}),
		"unknown":           {},
	} {
		if got := SynchronizeStage(request); got != want {
			t.Errorf("%v: %q, want %q", request, got, want)
		}
	}
}

func TestStaticBusyboxDataIsAStaticELF(t *testing.T) {
	data := StaticBusyboxData(t)
	if !bytes.HasPrefix(data, []byte("\x7fELF")) {
		t.Errorf("%d bytes that are not an ELF file", len(data))
	}
}
