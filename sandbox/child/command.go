package child

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// defaultSearchPath is used to find argv[0] when the action sets no
// PATH. It is not added to the command's environment.
const defaultSearchPath = "/usr/local/bin:/usr/bin:/bin"

// catchSignals makes PID 1 survive a `kill -TERM 1` from inside: a
// signal handler, unlike SIG_IGN, is reset by execve, so the command
// still gets default dispositions. Done in the warm phase: the first
// signal.Notify starts a thread, which is slow enough to matter.
func catchSignals() {
	signal.Notify(make(chan os.Signal, 1), unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
}

// runCommand starts the command and, as PID 1, reaps every process
// until the command itself has exited. Whatever it left running is
// then killed: an action ends when its command does.
func runCommand(prepare *Prepare, action *Action) *Status {
	dir := filepath.Join(prepare.ExecRootPath, action.WorkingDirectory)
	if prepare.ExecRootIsRoot {
		dir = filepath.Join("/", action.WorkingDirectory)
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		return failure("start", fmt.Errorf("working directory %q does not exist in the exec root", action.WorkingDirectory))
	}
	path, err := lookPath(action.Argv[0], dir, action.Env)
	if err != nil {
		return notFound(err)
	}
	devNull, err := os.Open("/dev/null")
	if err != nil {
		return failure("start", fmt.Errorf("open /dev/null: %w", err))
	}
	pid, err := syscall.ForkExec(path, action.Argv, &syscall.ProcAttr{
		Dir:   dir,
		Env:   action.Env,
		Files: []uintptr{devNull.Fd(), 1, 2},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	devNull.Close()
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOEXEC) || errors.Is(err, unix.ENOTDIR) {
			return notFound(fmt.Errorf("cannot run %q: %w", action.Argv[0], err))
		}
		return failure("start", fmt.Errorf("start %q: %w", action.Argv[0], err))
	}
	return reap(pid)
}

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
func notFound(err error) *Status {
	fmt.Fprintf(os.Stderr, "bitzel-worker: %v\n", err)
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
