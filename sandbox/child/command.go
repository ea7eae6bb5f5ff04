package child

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// defaultSearchPath is used to find argv[0] when the action sets no
// PATH. It is not added to the command's environment.
const defaultSearchPath = "/usr/local/bin:/usr/bin:/bin"

// catchSignals makes PID 1 survive a `kill -TERM 1` (or any other
// signal whose default action ends a process) sent from inside. The
// kernel already drops such signals for a namespace's init unless it
// has a handler, but the Go runtime installs a handler for all of them
// and exits on those the program did not ask for.
//
// The dispositions are set to SIG_IGN behind the runtime's back, with
// rt_sigaction itself: the runtime still believes it handles them, so
// the child it forks for the command resets them to SIG_DFL (an
// ignored disposition would survive execve and leave the command
// deaf to TERM). signal.Notify would keep the same guarantee, but it
// starts two threads and a goroutine the scheduler hands off to, which
// were a sizeable share of a trivial action's CPU time.
func catchSignals() {
	for _, sig := range ignoredSignals {
		ignoreSignal(sig)
	}
}

// ignoredSignals are those whose default action ends a process that
// the runtime does not need for itself (SIGURG preempts goroutines,
// SIGPROF profiles and is harmless; SIGSEGV, SIGBUS, SIGFPE, SIGILL and
// SIGTRAP come from faults, which the kernel delivers whatever the
// disposition; SIGKILL and SIGSTOP cannot be caught).
var ignoredSignals = []unix.Signal{
	unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGABRT, unix.SIGUSR1,
	unix.SIGUSR2, unix.SIGPIPE, unix.SIGALRM, unix.SIGTERM, unix.SIGSTKFLT,
	unix.SIGXCPU, unix.SIGXFSZ, unix.SIGVTALRM, unix.SIGIO, unix.SIGPWR,
	unix.SIGSYS,
}

// kernelSigaction is struct sigaction as rt_sigaction(2) takes it on
// amd64 and arm64 (both define sa_restorer).
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

func ignoreSignal(sig unix.Signal) {
	const sigIgn = 1
	action := kernelSigaction{handler: sigIgn}
	// Failure leaves Go's handler: PID 1 could then be killed from
	// inside, which ends only this sandbox.
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&action)), 0, unsafe.Sizeof(action.mask), 0, 0)
}

// startCommand starts the command: PID 1 reaps it and everything it
// starts (reap).
func startCommand(execRoot string, action *Action, files actionFiles) (int, *Status) {
	dir := filepath.Join(execRoot, action.WorkingDirectory)
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		return 0, failure("start", fmt.Errorf("working directory %q does not exist in the exec root", action.WorkingDirectory))
	}
	path, err := lookPath(action.Argv[0], dir, action.Env)
	if err != nil {
		return 0, notFound(files.stderr, err)
	}
	// Not os.Open: a character device can be polled, and os would
	// register with the poller a file nothing reads (direct_file.go).
	devNull, err := openDirect("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, failure("start", err)
	}
	pid, err := syscall.ForkExec(path, action.Argv, &syscall.ProcAttr{
		Dir:   dir,
		Env:   action.Env,
		Files: []uintptr{uintptr(devNull), uintptr(files.stdout), uintptr(files.stderr)},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	unix.Close(devNull)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOEXEC) || errors.Is(err, unix.ENOTDIR) {
			return 0, notFound(files.stderr, fmt.Errorf("cannot run %q: %w", action.Argv[0], err))
		}
		return 0, failure("start", fmt.Errorf("start %q: %w", action.Argv[0], err))
	}
	return pid, nil
}

// reap, as PID 1, reaps every process until the command itself has
// exited, then kills whatever it left running (an action ends when
// its command does) and reaps that too.
func reap(pid int) *Status {
	status := &Status{}
	for {
		var ws unix.WaitStatus
		var ru unix.Rusage
		wpid, err := unix.Wait4(-1, &ws, 0, &ru)
		if err == unix.EINTR {
			continue
		} else if err != nil {
			// ECHILD: nothing left to reap.
			break
		}
		status.UserTimeNanos += rusageNanos(ru.Utime)
		status.SystemTimeNanos += rusageNanos(ru.Stime)
		if rss := ru.Maxrss * 1024; rss > status.MaxRSSBytes {
			status.MaxRSSBytes = rss
		}
		if wpid == pid {
			switch {
			case ws.Exited():
				status.ExitCode = ws.ExitStatus()
			case ws.Signaled():
				status.Signal = int(ws.Signal())
				status.ExitCode = 128 + int(ws.Signal())
			}
			// Kills every other process of the namespace, but not
			// PID 1 itself.
			unix.Kill(-1, unix.SIGKILL)
		}
	}
	return status
}

// notFound reports a command that cannot be executed the way a shell
// does: a message on the action's stderr and exit code 127. It is a
// result of the action, visible to the user, not a worker failure.
func notFound(stderr int, err error) *Status {
	unix.Write(stderr, []byte(fmt.Sprintf("bitzel-worker: %v\n", err)))
	return &Status{ExitCode: 127, NotFound: true, Error: err.Error()}
}

// lookPath resolves argv[0] the way execvp would with the action's own
// PATH, not PID 1's environment.
func lookPath(name, dir string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	searchPath := defaultSearchPath
	for _, variable := range env {
		if value, ok := strings.CutPrefix(variable, "PATH="); ok {
			searchPath = value
		}
	}
	for _, entry := range filepath.SplitList(searchPath) {
		if entry == "" {
			entry = "."
		}
		candidate := filepath.Join(entry, name)
		resolved := candidate
		if !filepath.IsAbs(resolved) {
			resolved = filepath.Join(dir, candidate)
		}
		if info, err := os.Stat(resolved); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
			if !filepath.IsAbs(candidate) && !strings.HasPrefix(candidate, ".") {
				candidate = "./" + candidate
			}
			return candidate, nil
		}
	}
	return "", fmt.Errorf("%q: not found in PATH %q", name, searchPath)
}
