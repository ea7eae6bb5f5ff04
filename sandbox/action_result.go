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

// awaitReport waits for the end of the action: PID 1 reports once it
// has reaped every process of the action and its thread is gone, so
// the cgroup's counters are final and no mount of the action remains.
// Without a report PID 1 is dead (killed by the watchdog, or it
// failed), and is reaped here.
func (a *actionRun) awaitReport() report {
	statusData, diskBudget := readReport(a.zygote.control)
	rep := report{diskBudget: diskBudget}
	if status, err := child.DecodeStatus(statusData); len(statusData) > 0 && err == nil {
		rep.status, rep.reported = *status, true
	}
	if !rep.reported {
		rep.exit = a.zygote.process.wait()
		a.reaped = true
	}
	// Read before the cgroup is released (in the background, once
	// PID 1 is out of it): read after the removal, an OOM kill reads
	// as none and the result is cached.
	rep.stats = cgroupStats(a.cgroup)
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
