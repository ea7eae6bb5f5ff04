package child

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// An action's processes run as PID 1's uid in PID 1's user namespace,
// and see PID 1 in their pid namespace. Without any capability that
// lets them (CAP_SYS_RESOURCE, CAP_SYS_NICE, CAP_SYS_PTRACE are not in
// an action's set), a process may still make another of its uid worse
// off: lower its resource limits (prlimit) or raise its OOM score.
// Its scheduling (nice, policy, CPU affinity, I/O priority) the kernel
// lets it change only if PID 1's capabilities are a subset of its own
// (cap_safe_nice), which they are not, unless it is the root of a user
// namespace it made (allowed with --seccomp=allow-user-namespaces),
// whose capability mask is full. PID 1 could not undo any of it
// (raising them back needs those capabilities in the initial user
// namespace), and every later action of the slot would inherit it. So PID 1 notes these attributes when it is ready,
// and after each action compares: if anything differs, it retires and
// the worker starts a new PID 1 for the slot. Its memory, descriptors
// and credentials are out of reach (not dumpable: no ptrace, no
// /proc/1/mem, no pidfd_getfd), and the signals a command could send it
// are ignored (catchSignals) or cannot reach a namespace's init.
type health struct {
	rlimits [rlimitCount]unix.Rlimit
	// files are /proc/self entries an owner may write, with their
	// contents; a missing one is left out.
	files  map[string][]byte
	thread threadAttributes
}

// rlimitCount is RLIM_NLIMITS.
const rlimitCount = 16

// healthFiles are the /proc/PID entries of PID 1 that a process of its
// uid may write without a capability, and that a command started by
// PID 1 (or PID 1's own work) would feel.
var healthFiles = []string{"oom_score_adj", "coredump_filter", "autogroup"}

// threadAttributes are the scheduling attributes a thread passes to
// the threads and processes it creates.
type threadAttributes struct {
	policy   uint32
	nice     int32
	priority uint32
	utilMin  uint32
	utilMax  uint32
	affinity unix.CPUSet
	ioprio   int
}

func readHealth() (*health, error) {
	h := &health{files: map[string][]byte{}}
	for i := range h.rlimits {
		if err := unix.Getrlimit(i, &h.rlimits[i]); err != nil {
			return nil, fmt.Errorf("read resource limit %d: %w", i, err)
		}
	}
	for _, name := range healthFiles {
		if data, err := ReadFileDirect("/proc/self/" + name); err == nil {
			h.files[name] = data
		}
	}
	attributes, err := readThreadAttributes(0)
	if err != nil {
		return nil, err
	}
	h.thread = attributes
	return h, nil
}

func readThreadAttributes(tid int) (threadAttributes, error) {
	var a threadAttributes
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return a, fmt.Errorf("thread %d: sched_getattr: %w", tid, err)
	}
	a.policy, a.nice, a.priority, a.utilMin, a.utilMax = attr.Policy, attr.Nice, attr.Priority, attr.Util_min, attr.Util_max
	if err := unix.SchedGetaffinity(tid, &a.affinity); err != nil {
		return a, fmt.Errorf("thread %d: sched_getaffinity: %w", tid, err)
	}
	const ioprioWhoProcess = 1
	prio, _, errno := unix.RawSyscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
	if errno != 0 {
		return a, fmt.Errorf("thread %d: ioprio_get: %w", tid, errno)
	}
	a.ioprio = int(prio)
	return a, nil
}

// check returns what changed since readHealth, nil if nothing did.
func (h *health) check() error {
	for i := range h.rlimits {
		var now unix.Rlimit
		if err := unix.Getrlimit(i, &now); err != nil || now != h.rlimits[i] {
			return fmt.Errorf("resource limit %d changed from %+v to %+v", i, h.rlimits[i], now)
		}
	}
	for name, before := range h.files {
		if now, err := ReadFileDirect("/proc/self/" + name); err != nil || !bytes.Equal(now, before) {
			return fmt.Errorf("/proc/1/%s changed from %q to %q", name, before, now)
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("list PID 1's threads: %w", err)
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		now, err := readThreadAttributes(tid)
		if err == nil && now != h.thread {
			return fmt.Errorf("thread %d's scheduling attributes changed from %+v to %+v", tid, h.thread, now)
		}
		// A thread that exited since the listing (ESRCH) is fine.
	}
	return nil
}
