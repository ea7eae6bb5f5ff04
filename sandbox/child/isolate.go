package child

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// keptCapabilities is Docker's default set: enough for a BitBake
// do_install to chown, chmod setuid and bind low ports as the
// namespace's root, without CAP_SYS_ADMIN (mount, unshare),
// CAP_SYS_PTRACE or CAP_NET_ADMIN, which only widen what an action
// could do to its own sandbox.
var keptCapabilities = map[int]bool{
	unix.CAP_CHOWN:            true,
	unix.CAP_DAC_OVERRIDE:     true,
	unix.CAP_FSETID:           true,
	unix.CAP_FOWNER:           true,
	unix.CAP_MKNOD:            true,
	unix.CAP_NET_RAW:          true,
	unix.CAP_SETGID:           true,
	unix.CAP_SETUID:           true,
	unix.CAP_SETFCAP:          true,
	unix.CAP_SETPCAP:          true,
	unix.CAP_NET_BIND_SERVICE: true,
	unix.CAP_SYS_CHROOT:       true,
	unix.CAP_KILL:             true,
	unix.CAP_AUDIT_WRITE:      true,
}

// prepareSlot sets what the slot's actions share and cannot change:
// the slot's share of the per-user-namespace budgets (PID 1 has every
// capability in its namespace; an action has not CAP_SYS_RESOURCE to
// raise them), the network namespace (network.go) and, without a pids
// cgroup, the process limit.
func prepareSlot(prepare *Prepare) error {
	if err := prepare.UserNamespaceLimits.apply("/proc"); err != nil {
		return err
	}
	if err := prepareNetwork(); err != nil {
		return err
	}
	if n := prepare.MaxProcesses; n > 0 {
		// PID 1's own threads (a handful with GOMAXPROCS=2, none
		// made while a command runs) count as the action's processes
		// do, as a pids cgroup counts them.
		if err := unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: n, Max: n}); err != nil {
			return fmt.Errorf("limit processes: %w", err)
		}
	}
	return nil
}

// prepareIsolation gives the calling thread, in its new namespaces,
// what does not depend on the action: its hostname, a fresh session
// keyring, no_new_privs (which mounting does not need). All of
// it is per thread or per namespace: PID 1's other threads keep what
// they need to serve the next action.
func prepareIsolation(prepare *Prepare) error {
	if err := unix.Sethostname([]byte(prepare.Hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	if err := unix.Setdomainname([]byte("localdomain")); err != nil {
		return fmt.Errorf("set domain name: %w", err)
	}
	if err := joinFreshSessionKeyring(); err != nil {
		return err
	}
	// no_new_privs also stops setuid binaries of the host userland
	// from gaining anything.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}

// isolateAction finishes isolating the thread once the action's mounts
// are made: Docker's capabilities and the seccomp filter (which denies
// mounting), which the command inherits.
func isolateAction(prepare *Prepare) error {
	if err := dropCapabilities(); err != nil {
		return err
	}
	return installSeccomp(prepare.SeccompFilter)
}

// dropCapabilities removes everything outside keptCapabilities from
// the bounding set, which is what the command's capabilities are
// computed from when it is executed as uid 0.
func dropCapabilities() error {
	last := unix.CAP_LAST_CAP
	if data, err := ReadFileDirect("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if keptCapabilities[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return nil
}
