package child

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// installSeccomp installs the system-call filter the worker compiled
// (a struct sock_filter array, see sandbox/seccomp.go). It needs
// no_new_privs, which isolateAction sets first. TSYNC puts it on every
// thread of PID 1, not just the one that forks the command.
func installSeccomp(encoded []byte) error {
	if len(encoded) == 0 {
		return nil
	}
	if len(encoded)%8 != 0 || len(encoded)/8 > 0xffff {
		return fmt.Errorf("seccomp filter of %d bytes is not a BPF program", len(encoded))
	}
	filter := make([]unix.SockFilter, len(encoded)/8)
	for i := range filter {
		b := encoded[8*i:]
		filter[i] = unix.SockFilter{Code: binary.NativeEndian.Uint16(b), Jt: b[2], Jf: b[3], K: binary.NativeEndian.Uint32(b[4:])}
	}
	program := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&program)))
	if errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	return nil
}

// joinFreshSessionKeyring gives the action an empty session keyring of
// its own, so that with the filter off what it keeps in @s is not
// inherited from the launcher or the worker.
func joinFreshSessionKeyring() error {
	// A NULL name makes a new anonymous keyring (x/sys's wrapper
	// always passes a string).
	_, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0)
	if errno != 0 && errno != unix.ENOSYS {
		return fmt.Errorf("join a new session keyring: %w", errno)
	}
	return nil
}
