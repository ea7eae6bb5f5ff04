package child

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// UserNamespaceLimits bound what the processes of one user namespace
// may take of the kernel's per-user-namespace budgets: inotify
// instances and watches, fanotify groups and marks, namespaces of each
// type, and POSIX message-queue bytes. The kernel charges each of them
// to the (namespace, uid) of the process and to the (parent, owner) of
// every namespace above it, each level against its own namespace's
// limit: so a limit written in a namespace binds everything below it,
// and what is below cannot raise it (that needs CAP_SYS_RESOURCE in
// the namespace, which no command has). The worker computes them
// (sandbox/userns_budget.go); the launcher writes the budget of all
// sandboxes into the namespace they share and each PID 1 its action's
// share into its own.
type UserNamespaceLimits struct {
	// Sysctls are values for /proc/sys/user/NAME of the namespace the
	// writer is root of (current_user_ns, whatever /proc is mounted).
	Sysctls map[string]int64 `json:"sysctls,omitempty"`
	// MessageQueueBytes, when set, becomes RLIMIT_MSGQUEUE, soft and
	// hard. POSIX message queues are charged against it per uid, and
	// a user namespace created afterwards records it as the bound of
	// everything charged below it.
	MessageQueueBytes uint64 `json:"message_queue_bytes,omitempty"`
}

// apply writes the limits into the caller's user namespace. procDirs
// are tried in turn: a container's /proc/sys may be read-only where a
// fresh proc mount is not.
func (l *UserNamespaceLimits) apply(procDirs ...string) error {
	if l == nil {
		return nil
	}
	dirs := openSysctlDirs(procDirs)
	defer dirs.close()
	for name, value := range l.Sysctls {
		if name == "" || strings.ContainsAny(name, "/.") {
			return fmt.Errorf("user namespace limit %q: not a /proc/sys/user name", name)
		}
		if err := dirs.write(name, value); err != nil {
			return err
		}
	}
	if l.MessageQueueBytes > 0 {
		limit := unix.Rlimit{Cur: l.MessageQueueBytes, Max: l.MessageQueueBytes}
		if err := unix.Setrlimit(unix.RLIMIT_MSGQUEUE, &limit); err != nil {
			return fmt.Errorf("limit message-queue bytes to %d: %w", l.MessageQueueBytes, err)
		}
	}
	return nil
}

// sysctlDirs are the sys/user directories of the /proc candidates,
// each opened once: a limit is then one openat of its own name rather
// than a walk of the whole path. PID 1 writes a dozen limits per
// action, in a user namespace whose /proc/sys entries are all new, and
// those walks were most of what the writes cost.
type sysctlDirs struct {
	procDirs []string
	fds      []int
	errs     []error
}

func openSysctlDirs(procDirs []string) *sysctlDirs {
	d := &sysctlDirs{procDirs: procDirs, fds: make([]int, len(procDirs)), errs: make([]error, len(procDirs))}
	for i, proc := range procDirs {
		d.fds[i], d.errs[i] = unix.Open(filepath.Join(proc, "sys/user"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	return d
}

func (d *sysctlDirs) close() {
	for i, fd := range d.fds {
		if d.errs[i] == nil {
			unix.Close(fd)
		}
	}
}

// write sets sys/user/NAME in the first candidate that takes it. A
// kernel without that limit has no file for it (the worker lists them
// from its own /proc, same kernel): that is no error. The file is
// never created, nor followed if it is a link.
func (d *sysctlDirs) write(name string, value int64) error {
	data := []byte(strconv.FormatInt(value, 10))
	var err error
	for i := range d.procDirs {
		if err = d.errs[i]; err == nil {
			var fd int
			if fd, err = unix.Openat(d.fds[i], name, unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0); err == nil {
				_, err = unix.Write(fd, data)
				unix.Close(fd)
			}
		}
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
	}
	return fmt.Errorf("set /proc/sys/user/%s to %d: %w", name, value, err)
}
