package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/sandbox"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// What the sandbox reports decides the status: the worker's verdicts
// (timeout, disk budget) are errors with the logs still uploaded, a
// limit kill with exit 0 is a result not to cache.
func TestLocalExecutorTurnsRunnerResultsIntoStatuses(t *testing.T) {
	for _, tc := range []struct {
		name         string
		result       sandbox.Result
		wantCode     codes.Code
		wantStatus   string
		wantMessage  string
		wantCaptured bool
		wantNoCache  bool
	}{
		{name: "timed out", result: sandbox.Result{TimedOut: true, ExitCode: 137, Signal: syscall.SIGKILL}, wantCode: codes.DeadlineExceeded, wantStatus: "Action timed out after 1m0s", wantCaptured: true},
		{name: "OOM kill with exit 0", result: sandbox.Result{OOMKilled: true}, wantCode: codes.OK, wantMessage: "memory limit of 1048576 bytes; the result is not written to the Action Cache", wantCaptured: true, wantNoCache: true},
		{name: "disk budget", result: sandbox.Result{DiskBudgetExceeded: true, ExitCode: 1}, wantCode: codes.ResourceExhausted, wantStatus: "filled its disk budget of 4096 bytes (exec root); it exited with 1", wantMessage: "disk budget of 4096 bytes; the result is not written to the Action Cache", wantNoCache: true},
		{name: "command not found", result: sandbox.Result{NotFound: true, ExitCode: 127}, wantCode: codes.OK, wantMessage: "could not be executed", wantCaptured: true},
		{name: "truncated output", result: sandbox.Result{StdoutTruncated: true}, wantCode: codes.OK, wantMessage: "output beyond 512 bytes per stream was discarded", wantCaptured: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newExecutorFixture(t)
			f.options.Limits = sandbox.Limits{MemoryBytes: 1 << 20, DiskBytes: 4096}
			f.options.OutputLimitBytes = 512
			f.runner.run = writeLogs("out", "err", tc.result)
			response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{}, trueCommand), NoopObserver)
			st := status.FromProto(response.Status)
			if st.Code() != tc.wantCode || !strings.Contains(st.Message(), tc.wantStatus) {
				t.Errorf("status %v %q, want %v mentioning %q", st.Code(), st.Message(), tc.wantCode, tc.wantStatus)
			}
			if !strings.Contains(response.Message, tc.wantMessage) || (tc.wantMessage == "" && response.Message != "") {
				t.Errorf("message %q, want it to mention %q", response.Message, tc.wantMessage)
			}
			if response.Result.ExitCode != int32(tc.result.ExitCode) {
				t.Errorf("exit code %d, want %d", response.Result.ExitCode, tc.result.ExitCode)
			}
			// Logs are uploaded whatever happened.
			if got := string(readBlob(t, f.storage, response.Result.StdoutDigest)); got != "out" {
				t.Errorf("stdout %q, want it uploaded", got)
			}
			if got := string(readBlob(t, f.storage, response.Result.StderrDigest)); got != "err" {
				t.Errorf("stderr %q, want it uploaded", got)
			}
			if captured := f.outputs.captures > 0; captured != tc.wantCaptured {
				t.Errorf("outputs captured: %v, want %v", captured, tc.wantCaptured)
			}
			if _, notCached := notCachedReason(response.Result); notCached != tc.wantNoCache {
				t.Errorf("marked not to cache: %v, want %v", notCached, tc.wantNoCache)
			}
		})
	}
}

// A sandbox that could not be built is the worker's failure
// (INTERNAL), unless the action was cancelled meanwhile; either way
// the action's directory is removed rather than reused.
func TestLocalExecutorRunnerErrors(t *testing.T) {
	t.Run("runner error", func(t *testing.T) {
		f := newExecutorFixture(t)
		f.runner.run = func(context.Context, *sandbox.Spec) (*sandbox.Result, error) {
			return nil, errors.New("clone: operation not permitted")
		}
		response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{}, trueCommand), NoopObserver)
		st := status.FromProto(response.Status)
		if st.Code() != codes.Internal || !strings.Contains(st.Message(), "Failed to run the action: clone: operation not permitted") {
			t.Errorf("%v %q, want INTERNAL with the runner's error", st.Code(), st.Message())
		}
		if got := entries(t, f.buildDir); len(got) != 0 {
			t.Errorf("build directory holds %v after a failed sandbox, want nothing", got)
		}
		if f.outputs.captures != 0 || f.outputs.blobUploads != 0 {
			t.Errorf("%d captures and %d uploads after a failed sandbox", f.outputs.captures, f.outputs.blobUploads)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		f := newExecutorFixture(t)
		ctx, cancel := context.WithCancel(context.Background())
		f.runner.run = func(ctx context.Context, spec *sandbox.Spec) (*sandbox.Result, error) {
			cancel()
			<-ctx.Done()
			return nil, ctx.Err()
		}
		response := f.executor().Execute(ctx, f.request(&remoteexecution.Action{}, trueCommand), NoopObserver)
		if st := status.FromProto(response.Status); st.Code() != codes.Canceled {
			t.Errorf("%v %q, want CANCELLED", st.Code(), st.Message())
		}
	})
}

// A successful run's directory is taken back for the next action once
// the sandbox is released, emptied; the disk budget's tmpfs is closed
// after the outputs were read through it.
func TestLocalExecutorReadsOutputsThroughTheDiskBudgetAndClosesIt(t *testing.T) {
	f := newExecutorFixture(t)
	budget, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	wantUpper := fmt.Sprintf("/proc/self/fd/%d/u0", budget.Fd())
	released := make(chan struct{})
	f.runner.run = func(ctx context.Context, spec *sandbox.Spec) (*sandbox.Result, error) {
		if err := os.Mkdir(filepath.Join(spec.Mounts[0].UpperDir, "left"), 0o755); err != nil {
			return nil, err
		}
		return &sandbox.Result{DiskBudget: budget, Released: released}, nil
	}
	e := f.executor()
	response := e.Execute(context.Background(), f.request(&remoteexecution.Action{}, trueCommand), NoopObserver)
	if response.Status.GetCode() != int32(codes.OK) {
		t.Fatalf("status %v", response.Status)
	}
	if got := f.outputs.captureUppers[0]; len(got) != 1 || got[0] != wantUpper {
		t.Errorf("captured from %v, want the disk budget's %q", got, wantUpper)
	}
	if err := budget.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("closing the disk budget again: %v, want it closed by the executor", err)
	}
	// Reuse once the sandbox is reaped: execroot's tests.
	close(released)
}

// A CAS that is briefly UNAVAILABLE costs a retry, not the action;
// other errors are not retried and keep their code.
func TestLocalExecutorRetriesUnavailableStorage(t *testing.T) {
	t.Run("materializer unavailable then fine", func(t *testing.T) {
		f := newExecutorFixture(t)
		f.materializer.errs = []error{status.Error(codes.Unavailable, "connection reset")}
		response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{}, trueCommand), NoopObserver)
		if response.Status.GetCode() != int32(codes.OK) {
			t.Fatalf("status %v, want OK after a retry", response.Status)
		}
		if n := f.materializer.callCount(); n != 2 {
			t.Errorf("materialised %d times, want 2", n)
		}
	})
	t.Run("materializer refuses", func(t *testing.T) {
		f := newExecutorFixture(t)
		f.materializer.errs = []error{status.Error(codes.InvalidArgument, "Directory \"a\" has a file named \"..\"")}
		response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{}, trueCommand), NoopObserver)
		st := status.FromProto(response.Status)
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "Failed to materialise the input root: Directory") {
			t.Errorf("%v %q, want the materializer's INVALID_ARGUMENT with context", st.Code(), st.Message())
		}
		if n := f.materializer.callCount(); n != 1 {
			t.Errorf("materialised %d times, want 1", n)
		}
	})
	t.Run("log upload and capture unavailable then fine", func(t *testing.T) {
		f := newExecutorFixture(t)
		f.outputs.uploadErrs = []error{status.Error(codes.Unavailable, "gone")}
		f.outputs.captureErrs = []error{status.Error(codes.Unavailable, "gone")}
		f.runner.run = writeLogs("out", "", sandbox.Result{})
		response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{}, trueCommand), NoopObserver)
		if response.Status.GetCode() != int32(codes.OK) {
			t.Fatalf("status %v, want OK after retries", response.Status)
		}
		if f.outputs.captures != 2 {
			t.Errorf("%d captures, want 2", f.outputs.captures)
		}
		if got := string(readBlob(t, f.storage, response.Result.StdoutDigest)); got != "out" {
			t.Errorf("stdout %q", got)
		}
	})
	t.Run("capture refuses", func(t *testing.T) {
		f := newExecutorFixture(t)
		f.outputs.captureErrs = []error{status.Error(codes.ResourceExhausted, "outputs over the budget")}
		response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{}, trueCommand), NoopObserver)
		st := status.FromProto(response.Status)
		if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "Failed to capture outputs: outputs over the budget") {
			t.Errorf("%v %q", st.Code(), st.Message())
		}
		if response.Result.StdoutDigest == nil {
			t.Error("logs not reported with a failed capture")
		}
	})
}

// A full disk is the worker's condition (RESOURCE_EXHAUSTED, so that a
// client retries elsewhere), whether the errno came through intact or
// only in a message.
func TestLocalExecutorReportsAFullDiskAsResourceExhausted(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"ENOSPC wrapped", fmt.Errorf("write output: %w", syscall.ENOSPC)},
		{"EDQUOT wrapped", fmt.Errorf("write output: %w", syscall.EDQUOT)},
		{"ENOSPC in a status message", status.Errorf(codes.Unknown, "write /cas/blocks: %v", syscall.ENOSPC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newExecutorFixture(t)
			f.outputs.captureErrs = []error{tc.err}
			response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{}, trueCommand), NoopObserver)
			st := status.FromProto(response.Status)
			if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "The worker is out of disk space") {
				t.Errorf("%v %q, want RESOURCE_EXHAUSTED out of disk space", st.Code(), st.Message())
			}
		})
	}
}
