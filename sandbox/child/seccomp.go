package child

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// installSeccomp installs the system-call filter the worker compiled
// (a struct sock_filter array, see sandbox/seccomp.go) on the calling
// thread only: the action's thread, which forks the command. Without
// TSYNC, PID 1's other threads stay unfiltered and can build the next
// action's namespaces. It needs no_new_privs, which isolateAction sets
// first.
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
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&program)))
	if errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	return nil
}

// joinFreshSessionKeyring gives the action an empty session keyring of
// its own (the calling thread's, which the command inherits), so that
// with the filter off what it keeps in @s is not inherited from the
// launcher, the worker or an earlier action.
func joinFreshSessionKeyring() error {
	// A NULL name makes a new anonymous keyring (x/sys's wrapper
	// always passes a string).
	_, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0)
	if errno != 0 && errno != unix.ENOSYS {
		return fmt.Errorf("join a new session keyring: %w", errno)
	}
	return nil
}
