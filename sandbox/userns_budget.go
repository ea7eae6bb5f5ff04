package sandbox

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/bitzel/bitzel-worker/sandbox/child"
	"golang.org/x/sys/unix"
)

// HostReserveDivisor: of each per-user-namespace budget the worker
// finds (the limits in its own /proc/sys/user and its own
// RLIMIT_MSGQUEUE), this fraction is kept for the host, that is for
// every process of the worker's uid outside the sandboxes (host root's
// daemons when the worker runs as root); the rest is split evenly
// between the slots.
const HostReserveDivisor = 4

// ownNamespaces are the namespaces a slot's PID 1 holds in its own user
// namespace besides what its actions may create, counted against the
// slot's share: PID 1's own, and (but the pid and network namespaces,
// which are the slot's) the next action's, which PID 1 makes ahead of
// it (child/action_thread.go) while those of the last action may still
// be being freed.
var ownNamespaces = map[string]int64{
	"max_mnt_namespaces": 2, "max_pid_namespaces": 1, "max_net_namespaces": 1,
	"max_ipc_namespaces": 2, "max_uts_namespaces": 2,
}

// UserNamespaceBudget is how the worker splits the kernel's
// per-user-namespace budgets (child.UserNamespaceLimits): All is what
// all sandboxes together may take, written into the user namespace
// they share; PerAction is one action's share, written into the
// namespace of its own.
type UserNamespaceBudget struct {
	All, PerAction child.UserNamespaceLimits
}

// NewUserNamespaceBudget reads the worker's own limits and splits them
// for slots actions at once.
func NewUserNamespaceBudget(slots int) (*UserNamespaceBudget, error) {
	if slots < 1 {
		slots = 1
	}
	b := &UserNamespaceBudget{
		All:       child.UserNamespaceLimits{Sysctls: map[string]int64{}},
		PerAction: child.UserNamespaceLimits{Sysctls: map[string]int64{}},
	}
	entries, err := os.ReadDir("/proc/sys/user")
	if err != nil {
		return nil, fmt.Errorf("sandbox: read the per-user-namespace limits: %w", err)
	}
	for _, entry := range entries {
		name := entry.Name()
		if !strings.HasPrefix(name, "max_") {
			continue
		}
		data, err := os.ReadFile("/proc/sys/user/" + name)
		if err != nil {
			return nil, fmt.Errorf("sandbox: read the per-user-namespace limits: %w", err)
		}
		limit, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("sandbox: /proc/sys/user/%s: %w", name, err)
		}
		all, share := split(limit, slots)
		share += ownNamespaces[name]
		b.All.Sysctls[name], b.PerAction.Sysctls[name] = all, share
	}
	var msgqueue unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MSGQUEUE, &msgqueue); err != nil {
		return nil, fmt.Errorf("sandbox: read RLIMIT_MSGQUEUE: %w", err)
	}
	if msgqueue.Cur != unix.RLIM_INFINITY && msgqueue.Cur < 1<<62 {
		all, share := split(int64(msgqueue.Cur), slots)
		b.All.MessageQueueBytes, b.PerAction.MessageQueueBytes = uint64(all), uint64(share)
	}
	return b, nil
}

// split returns what all sandboxes together and what one of them may
// take of limit. A share is never 0, which would refuse even the first
// use; with more slots than the limit allows the host's reserve is
// then what gives.
func split(limit int64, slots int) (all, share int64) {
	all = limit - limit/HostReserveDivisor
	share = all / int64(slots)
	if share < 1 {
		share = 1
	}
	return all, share
}

// String is for the worker's start-up line.
func (b *UserNamespaceBudget) String() string {
	return fmt.Sprintf("per slot (its actions one after another): %d inotify instances, %d watches, %d message-queue bytes; all slots: %d, %d, %d",
		b.PerAction.Sysctls["max_inotify_instances"], b.PerAction.Sysctls["max_inotify_watches"], b.PerAction.MessageQueueBytes,
		b.All.Sysctls["max_inotify_instances"], b.All.Sysctls["max_inotify_watches"], b.All.MessageQueueBytes)
}
