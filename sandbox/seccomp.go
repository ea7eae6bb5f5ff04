package sandbox

import (
	"encoding/binary"
	"fmt"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// SeccompMode selects the system-call filter of every action.
type SeccompMode string

const (
	// SeccompDefault denies what Docker's and Podman's default
	// profiles deny to a container without extra capabilities:
	// kernel keyrings, BPF, perf events, userfaultfd, kexec, kernel
	// modules, the clocks, and new user namespaces (and with them
	// every mount and namespace operation).
	SeccompDefault SeccompMode = "default"
	// SeccompAllowUserNamespaces is the default filter without the
	// user namespace rules: an action may unshare -r and mount in its
	// nested namespaces (bubblewrap, rootless Podman, buildah).
	SeccompAllowUserNamespaces SeccompMode = "allow-user-namespaces"
	// SeccompOff installs no filter.
	SeccompOff SeccompMode = "off"
)

// ParseSeccompMode checks a mode named in a flag or configuration;
// empty is the default.
func ParseSeccompMode(s string) (SeccompMode, error) {
	switch mode := SeccompMode(s); mode {
	case "":
		return SeccompDefault, nil
	case SeccompDefault, SeccompAllowUserNamespaces, SeccompOff:
		return mode, nil
	}
	return "", fmt.Errorf("unknown seccomp mode %q (want default, allow-user-namespaces or off)", s)
}

// deniedSyscalls is the part of Docker's default profile that a
// sandbox's capabilities do not already refuse, plus what needs
// capabilities the action lacks (denied anyway, so a kernel bug in a
// capability check is not reachable). Keyrings first: with cgroups all
// sandboxes share one user namespace, and with it uid 0's user
// keyring, so a key one action added could be read by the next.
var deniedSyscalls = []string{
	"keyctl", "add_key", "request_key",
	"bpf", "perf_event_open", "userfaultfd",
	"kexec_load", "kexec_file_load",
	"init_module", "finit_module", "delete_module", "create_module",
	"clock_settime", "clock_adjtime", "settimeofday", "adjtimex", "stime",
	// io_uring runs its operations outside the filter (Docker denies
	// it since 25.0).
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"acct", "swapon", "swapoff", "reboot", "quotactl", "lookup_dcookie",
	"open_by_handle_at", "iopl", "ioperm", "vm86", "vm86old", "uselib",
	"_sysctl", "nfsservctl", "get_kernel_syms", "query_module",
	"fanotify_init",
}

// namespaceSyscalls create, enter or build on namespaces. Without a
// nested user namespace the action has no capability that makes them
// succeed, so denying them only closes kernel attack surface; with one
// they are what the action asked for.
var namespaceSyscalls = []string{
	"setns", "mount", "umount", "umount2", "pivot_root",
	"fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr",
}

// compileSeccomp assembles the filter of a mode once per runner into
// the struct sock_filter array PID 1 installs, so that PID 1 (a small
// binary started per action) links no BPF assembler.
// github.com/elastic/go-seccomp-bpf builds it from syscall names with
// argument conditions, pure Go, no libseccomp (cgo) and no
// hand-assembled jumps.
func compileSeccomp(mode SeccompMode) ([]byte, error) {
	if mode == SeccompOff {
		return nil, nil
	}
	native, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	groups := []seccomp.SyscallGroup{{
		Action: seccomp.ActionErrno | seccomp.Action(unix.EPERM),
		Names:  known(native, deniedSyscalls),
	}}
	if mode == SeccompDefault {
		groups = append(groups, userNamespaceRules(native)...)
	}
	policy := seccomp.Policy{DefaultAction: seccomp.ActionAllow, Syscalls: groups}
	instructions, err := policy.Assemble()
	if err != nil {
		return nil, fmt.Errorf("seccomp: assemble policy: %w", err)
	}
	// The library's program allows every call of a foreign ABI
	// (i386's int 0x80 on amd64), which would reach keyctl by another
	// number: refuse those first, as ENOSYS.
	guard := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4}, // seccomp_data.arch
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(native.ID), SkipTrue: 1},
		bpf.RetConstant{Val: uint32(seccomp.ActionErrno) | uint32(unix.ENOSYS)},
	}
	raw, err := bpf.Assemble(append(guard, instructions...))
	if err != nil {
		return nil, fmt.Errorf("seccomp: assemble BPF: %w", err)
	}
	encoded := make([]byte, 0, 8*len(raw))
	for _, r := range raw {
		encoded = binary.NativeEndian.AppendUint16(encoded, r.Op)
		encoded = append(encoded, r.Jt, r.Jf)
		encoded = binary.NativeEndian.AppendUint32(encoded, r.K)
	}
	return encoded, nil
}

// userNamespaceRules refuse new user namespaces as Docker does:
// unshare and clone with CLONE_NEWUSER get EPERM, and clone3, whose
// flags are in memory a filter cannot read, gets ENOSYS so that glibc
// and Go fall back to clone.
func userNamespaceRules(native *arch.Info) []seccomp.SyscallGroup {
	newUser := seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.BitsSet, Value: unix.CLONE_NEWUSER}}
	return []seccomp.SyscallGroup{
		{
			Action: seccomp.ActionErrno | seccomp.Action(unix.EPERM),
			Names:  known(native, namespaceSyscalls),
			NamesWithCondtions: []seccomp.NameWithConditions{
				{Name: "unshare", Conditions: newUser},
				{Name: "clone", Conditions: newUser},
			},
		},
		{Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS), Names: known(native, []string{"clone3"})},
	}
}

// known drops the names this architecture has no system call for
// (vm86 and iopl on arm64, for one).
func known(native *arch.Info, names []string) []string {
	var result []string
	for _, name := range names {
		if _, ok := native.SyscallNames[name]; ok {
			result = append(result, name)
		}
	}
	return result
}
