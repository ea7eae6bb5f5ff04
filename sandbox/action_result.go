package sandbox

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/bitzel/bitzel-worker/sandbox/child"
)

// report is what PID 1 said about the action, or, when it said
// nothing, what wait4 saw of PID 1.
type report struct {
	reported   bool
	status     child.Status
	exit       child.ExitNotice
	diskBudget *os.File
	stats      CgroupStats
}

// awaitReport waits for the end of the action. PID 1 closes the status
// socket once it has reaped every process of the action and reported,
// or when it dies. After a report the action is over (its output pipes
// are closed too) and PID 1 is reaped in the background (handOff);
// without one, PID 1 is dead and is reaped here.
func (a *actionRun) awaitReport() report {
	statusData, diskBudget := readStatus(a.sandbox.pipes.statusR)
	rep := report{diskBudget: diskBudget}
	if status, err := child.DecodeStatus(statusData); len(statusData) > 0 && err == nil {
		rep.status, rep.reported = *status, true
	}
	// The cgroup's counters are read before release may remove it
	// (release runs in the background once PID 1 is reaped, which can
	// be before this goroutine reads them): read after the removal, an
	// OOM kill reads as none and the result is cached. The exiting
	// PID 1 unmounts the action's overlays itself (its mount namespace
	// dies with it), so once it is reaped its upper and work
	// directories are free.
	if rep.reported {
		// PID 1 reports only once it has reaped every other process
		// of the action, so the counters are final.
		rep.stats = cgroupStats(a.cgroup)
		a.handOff()
	} else {
		rep.exit = a.sandbox.process.wait()
		a.reaped = true
		rep.stats = cgroupStats(a.cgroup)
	}
	return rep
}

// result is the Result of the action, or the error of a sandbox that
// failed or was cancelled.
func (a *actionRun) result(ctx context.Context, rep report, w *watchdog, wall time.Duration) (*Result, error) {
	result := &Result{
		DiskBudget:       rep.diskBudget,
		Released:         a.released,
		WallTime:         wall,
		TimedOut:         w.timedOut.Load(),
		StdoutTruncated:  a.stdout.truncated,
		StderrTruncated:  a.stderr.truncated,
		OOMKilled:        rep.stats.OOMKilled,
		PidsLimitHit:     rep.stats.PidsLimitHit,
		CgroupMemoryPeak: rep.stats.MemoryPeakBytes,
	}
	result.DiskBudgetExceeded = budgetFull(rep.diskBudget)
	if w.cancelled.Load() {
		result.closeDiskBudget()
		return nil, fmt.Errorf("sandbox: %w", context.Cause(ctx))
	}
	status := rep.status
	if !rep.reported {
		if !result.TimedOut && !result.OOMKilled {
			result.closeDiskBudget()
			if a.sendErr != nil {
				return nil, fmt.Errorf("sandbox: send the action to init: %w", a.sendErr)
			}
			return nil, fmt.Errorf("sandbox: init exited without reporting (wait status %v)", syscall.WaitStatus(rep.exit.WaitStatus))
		}
		// Killed before it could report: take what wait4 saw.
		result.UserTime = time.Duration(rep.exit.UserTimeNanos)
		result.SystemTime = time.Duration(rep.exit.SystemTimeNanos)
		result.PeakRSSBytes = rep.exit.MaxRSSBytes
		result.ExitCode = 128 + int(syscall.SIGKILL)
		result.Signal = syscall.SIGKILL
		return result, nil
	}
	if status.Error != "" && !status.NotFound {
		result.closeDiskBudget()
		return nil, fmt.Errorf("sandbox: %s: %s", status.Stage, status.Error)
	}
	result.ExitCode = status.ExitCode
	result.Signal = syscall.Signal(status.Signal)
	result.NotFound = status.NotFound
	result.UserTime = time.Duration(status.UserTimeNanos)
	result.SystemTime = time.Duration(status.SystemTimeNanos)
	result.PeakRSSBytes = status.MaxRSSBytes
	result.SetupTime = time.Duration(status.SetupNanos)
	return result, nil
}
