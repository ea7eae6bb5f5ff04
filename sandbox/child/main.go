package child

import (
	"os"
	"path/filepath"
	"runtime"

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

// Main runs PID 1 of a sandbox and never returns: it serves the
// slot's actions (zygote.go) until the worker closes the config pipe.
func Main() {
	// The main goroutine keeps the main thread, so that no action's
	// thread (action_thread.go), whose namespaces and credentials are
	// changed for good, is ever the main thread: Go can end any other
	// thread with its goroutine, not that one.
	runtime.LockOSThread()
	serve()
	os.Exit(0)
}

func failure(stage string, err error) *Status {
	return &Status{Stage: stage, Error: err.Error(), ExitCode: -1}
}

// rusageNanos converts a timeval to nanoseconds.
func rusageNanos(tv unix.Timeval) int64 {
	return tv.Sec*1e9 + int64(tv.Usec)*1e3
}
