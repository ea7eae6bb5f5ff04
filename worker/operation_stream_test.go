package worker

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/sandbox"
	"google.golang.org/genproto/googleapis/longrunning"
	"google.golang.org/protobuf/types/known/structpb"
)

// An operation's stream sends its state now and at every change, stops
// when it is done or the client leaves, and ignores stages after
// completion.
func TestOperationStreamsEveryChangeUntilDone(t *testing.T) {
	op := newOperation("op", digestOfBytes([]byte("a")))
	sent := make(chan *longrunning.Operation, 10)
	done := make(chan error, 1)
	go func() {
		done <- op.stream(context.Background(), func(o *longrunning.Operation) error { sent <- o; return nil })
	}()
	next := func() *longrunning.Operation {
		t.Helper()
		select {
		case o := <-sent:
			return o
		case <-time.After(10 * time.Second):
			t.Fatal("nothing streamed")
			return nil
		}
	}
	if o := next(); stageOf(t, o) != remoteexecution.ExecutionStage_QUEUED || o.Done {
		t.Fatalf("first %v, want QUEUED", o)
	}
	op.setStage(remoteexecution.ExecutionStage_EXECUTING)
	if o := next(); stageOf(t, o) != remoteexecution.ExecutionStage_EXECUTING {
		t.Fatalf("second %v, want EXECUTING", o)
	}
	// The same stage again is no change.
	op.setStage(remoteexecution.ExecutionStage_EXECUTING)
	op.complete(&remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{ExitCode: 4}})
	o := next()
	if !o.Done || stageOf(t, o) != remoteexecution.ExecutionStage_COMPLETED {
		t.Fatalf("third %v, want done and COMPLETED (no duplicate EXECUTING)", o)
	}
	response := &remoteexecution.ExecuteResponse{}
	if err := o.GetResponse().UnmarshalTo(response); err != nil || response.Result.ExitCode != 4 {
		t.Fatalf("response %v (%v)", response, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	op.setStage(remoteexecution.ExecutionStage_EXECUTING)
	if snapshot, _, _ := op.snapshot(); stageOf(t, snapshot) != remoteexecution.ExecutionStage_COMPLETED {
		t.Error("a completed operation went back to EXECUTING")
	}

	// A failing send ends the stream with its error; so does a client
	// that leaves.
	broken := errors.New("stream broken")
	if err := newOperation("x", digestOfBytes(nil)).stream(context.Background(), func(*longrunning.Operation) error { return broken }); err != broken {
		t.Errorf("stream with a failing send: %v, want its error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := newOperation("y", digestOfBytes(nil)).stream(ctx, func(*longrunning.Operation) error { return nil }); err != context.Canceled {
		t.Errorf("stream after the client left: %v, want context.Canceled", err)
	}
}

func TestStageNames(t *testing.T) {
	got := []string{}
	for s := StageStarted; s <= StageCompleted+1; s++ {
		got = append(got, s.String())
	}
	want := []string{"started", "fetching inputs", "running", "uploading outputs", "completed", "unknown"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stage names %q, want %q", got, want)
	}
}

func TestResourceUsageReportsWhatTheSandboxMeasured(t *testing.T) {
	fields := func(r *sandbox.Result) map[string]any {
		t.Helper()
		var s structpb.Struct
		if err := resourceUsage(r).UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		return s.AsMap()
	}
	got := fields(&sandbox.Result{
		UserTime: 1500 * time.Millisecond, SystemTime: 250 * time.Millisecond, PeakRSSBytes: 4096,
		WallTime: 2 * time.Second, SetupTime: 10 * time.Millisecond, TimedOut: true, StderrTruncated: true,
	})
	want := map[string]any{
		"user_time_seconds": 1.5, "system_time_seconds": 0.25, "peak_rss_bytes": 4096.0,
		"wall_time_seconds": 2.0, "sandbox_setup_seconds": 0.01, "timed_out": true, "oom_killed": false,
		"stdout_truncated": false, "stderr_truncated": true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("usage %v, want %v", got, want)
	}
	// Only measured when there is something to say.
	got = fields(&sandbox.Result{CgroupMemoryPeak: 1 << 20, Signal: 9})
	if got["cgroup_memory_peak_bytes"] != float64(1<<20) || got["signal"] != 9.0 {
		t.Errorf("usage %v, want the cgroup peak and the signal", got)
	}
}

func TestSortPlatformByNameThenValue(t *testing.T) {
	p := platformOf("OSFamily", "linux", "ISA", "x86-64", "Pool", "b", "Pool", "a", "ISA", "arm-a64")
	SortPlatform(p)
	var got []string
	for _, property := range p.Properties {
		got = append(got, property.Name+"="+property.Value)
	}
	want := []string{"ISA=arm-a64", "ISA=x86-64", "OSFamily=linux", "Pool=a", "Pool=b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sorted %q, want %q", got, want)
	}
}
