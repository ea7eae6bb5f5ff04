package child

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// The worker binary can serve as its own sandbox init: re-executed as
// /proc/self/exe with EnvMarker set, it must become PID 1 before any
// other package initialiser runs (gRPC, metrics, ...), both for speed
// and because those start goroutines and state a PID 1 must not have.
// Go initialises a package once everything it imports is initialised,
// so this runs after the standard library and x/sys only.
//
// The dedicated init binary dispatches from main() instead (Dispatch):
// runtime.main locks the main goroutine to the main thread while
// package initialisers run, so a PID 1 or launcher that never returns
// from init keeps every goroutine it starts (the signal watcher, the
// launcher's reapers, the runtime's own) off that thread, and each
// switch between them is a thread handoff.
func init() {
	if self, err := os.Executable(); err == nil && filepath.Base(self) == InitBinaryName {
		return
	}
	Dispatch()
}

// Dispatch runs PID 1 or the launcher when the environment asks for
// one, and returns otherwise.
func Dispatch() {
	answerProtocolQuery()
	if os.Getenv(EnvMarker) != "" {
		Main()
	}
	if os.Getenv(LauncherEnvMarker) != "" {
		LauncherMain()
	}
}

// Main runs PID 1 of a sandbox and never returns. It reads its Prepare
// and Action, builds the file system, runs the command, reaps every
// process and reports a Status.
func Main() {
	// The capability bounding set and no_new_privs belong to a
	// thread, and the command is forked from whichever thread runs
	// this goroutine at the time: it must be the one that dropped
	// them.
	runtime.LockOSThread()
	status := run()
	if status != nil {
		report(status)
	}
	// The exit code of PID 1 only matters when the status pipe could
	// not be written; the parent treats a missing status as failure.
	os.Exit(0)
}

// run returns nil when the worker closed the config pipe without
// sending an action: a warm sandbox discarded at shutdown.
func run() *Status {
	// Inherited descriptors lose close-on-exec; the command must not
	// see the config or status pipes.
	unix.CloseOnExec(ConfigFD)
	unix.CloseOnExec(StatusFD)
	// Not dumpable: the command, though the same uid, cannot read
	// PID 1's memory or descriptors through /proc/1.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	configFile := os.NewFile(ConfigFD, "config")
	config := bufio.NewReader(configFile)

	prepare, err := ReadPrepare(config)
	if err != nil {
		return failure("config", fmt.Errorf("read prepare: %w", err))
	}
	catchSignals()
	root, prepareErr := prepareRoot(prepare)
	if prepareErr == nil {
		prepareErr = prepareIsolation(prepare)
	}

	action, err := ReadAction(config)
	if errors.Is(err, io.EOF) {
		return nil
	} else if err != nil {
		return failure("config", fmt.Errorf("read action: %w", err))
	}
	configFile.Close()
	// A failed preparation is reported once there is an action to
	// report it to.
	if prepareErr != nil {
		return failure("prepare", prepareErr)
	}
	if len(action.Mounts) == 0 {
		return failure("config", errors.New("action has no exec root overlay"))
	}
	if len(action.Argv) == 0 {
		return failure("config", errors.New("action has no command"))
	}
	start := time.Now()
	if err := root.finish(action); err != nil {
		return failure("mount", err)
	}
	if err := isolateAction(prepare, action); err != nil {
		return failure("isolate", err)
	}
	setup := time.Since(start)
	status := runCommand(prepare, action)
	status.SetupNanos = setup.Nanoseconds()
	return status
}

func failure(stage string, err error) *Status {
	return &Status{Stage: stage, Error: err.Error(), ExitCode: -1}
}

func report(status *Status) {
	data := EncodeStatus(status)
	// The action is over: close its output pipes first, so that the
	// worker has all of its output once it has the status.
	unix.Close(0)
	unix.Close(1)
	unix.Close(2)
	f := os.NewFile(StatusFD, "status")
	if _, err := f.Write(data); err != nil {
		os.Exit(4)
	}
	f.Close()
}

// rusageNanos converts a timeval to nanoseconds.
func rusageNanos(tv unix.Timeval) int64 {
	return tv.Sec*1e9 + int64(tv.Usec)*1e3
}
