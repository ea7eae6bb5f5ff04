// Package sandbox runs commands, one per action, in sandboxes whose
// PID 1 serves one action after another (child/zygote.go): each action
// gets fresh mount, IPC and UTS namespaces on an exec root that is an
// overlay of read-only layer directories, in the user, pid and network
// namespaces of its slot's sandbox, and the runner reports what
// happened.
package sandbox

import (
	"context"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/bitzel/bitzel-worker/sandbox/child"
)

// Runner runs commands in sandboxes. Run returns an error only when
// the sandbox could not be built or supervised; whatever the command
// did (non-zero exit, signal, timeout, OOM kill) is in the Result.
type Runner interface {
	Run(ctx context.Context, spec *Spec) (*Result, error)
	// Close releases what the runner keeps between runs (the
	// sandboxes' PID 1s waiting for their next action).
	Close() error
}

// Spec describes one sandboxed command.
type Spec struct {
	// Mounts[0] is the exec root (its Path is ""); the others are
	// overlays at sub-paths of it, parents before children.
	Mounts []Mount
	// Argv, Env and WorkingDirectory (relative to the exec root) are
	// the command. Env is the whole environment: nothing of the
	// worker's leaks in.
	Argv             []string
	Env              []string
	WorkingDirectory string
	// Timeout bounds the wall-clock time from start to the death of
	// every process of the action. Zero means no timeout.
	Timeout time.Duration
	// Stdout and Stderr receive the command's output, at most
	// OutputLimitBytes each (0: unlimited); the rest is discarded
	// and reported as truncated. The worker passes its log buffers
	// (live logs), the sandbox subcommand its own streams.
	Stdout           io.Writer
	Stderr           io.Writer
	OutputLimitBytes int64
	// StdoutPath and StderrPath, when Stdout or Stderr is nil, name
	// files that receive the stream instead; only this package's
	// tests use them, to read an action's output after the fact.
	StdoutPath string
	StderrPath string
	Limits     Limits
	// ExecRootIsRoot makes the exec root the whole root file system
	// for this command only (the input root is "/": its userland
	// comes in its layers), as the runner-wide option does for every
	// command; the two are ORed.
	ExecRootIsRoot bool
}

// Mount is one overlay: read-only Layers (topmost first) under a
// private UpperDir, with WorkDir on the same file system as UpperDir.
// It is defined in package child, which receives it as it is (child
// keeps its imports minimal, so the type lives there and not here).
type Mount = child.Mount

// Limits bound the resources of one action. Zero means unlimited.
type Limits struct {
	MemoryBytes  int64
	MaxProcesses int64
	// CPUMillis is the CPU bandwidth in thousandths of a CPU.
	CPUMillis    int64
	TmpSizeBytes int64
	// DiskBytes bounds everything the action writes (exec root and
	// /tmp together); 0: unbounded.
	DiskBytes int64
}

// Result is what happened to the command.
type Result struct {
	// ExitCode is the command's exit status, or 128+signal when it
	// was killed by a signal (as a shell reports it).
	ExitCode int
	// Signal is the signal that killed the command, or 0.
	Signal syscall.Signal
	// TimedOut: the Timeout expired and every process was killed.
	TimedOut bool
	// OOMKilled: the memory limit was hit and the kernel killed a
	// process of the action.
	OOMKilled bool
	// PidsLimitHit: the process limit refused a fork (cgroups only).
	PidsLimitHit bool
	// DiskBudgetExceeded: the action's writes filled Limits.DiskBytes.
	DiskBudgetExceeded bool
	// NotFound: argv[0] could not be executed (exit code 127).
	NotFound         bool
	StdoutTruncated  bool
	StderrTruncated  bool
	WallTime         time.Duration
	SetupTime        time.Duration
	UserTime         time.Duration
	SystemTime       time.Duration
	PeakRSSBytes     int64
	CgroupMemoryPeak int64
	// DiskBudget is set when Limits.DiskBytes applied: the tmpfs that
	// holds the overlays' upper directories, which the sandbox's
	// mounts no longer reach. UpperDirs names them through it; the
	// caller closes it once it has read the outputs, which frees the
	// tmpfs.
	DiskBudget *os.File
	// Released is closed once no process and no mount of the action
	// remains (the sandbox's PID 1 has released the action's mount
	// namespace, or has been reaped), and its upper and work
	// directories may be used again. Nil means at once.
	Released <-chan struct{}
}
