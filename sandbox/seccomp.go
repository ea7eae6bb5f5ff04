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
	// i386's 64-bit-time variants of the two above.
	"clock_settime64", "clock_adjtime64",
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
// the struct sock_filter array PID 1 installs, so that PID 1 links no
// BPF assembler. The rules are github.com/elastic/go-seccomp-bpf's
// SyscallGroups (syscall names with argument conditions, its syscall
// tables per ABI, pure Go, no libseccomp and cgo); the dispatch on the
// number is a search tree (seccomp_tree.go).
//
// The program dispatches on seccomp_data.arch: the native ABI gets its
// section, i386 (int 0x80 and sysenter on amd64, which a 32-bit binary
// uses) one with the same rules by its own numbers, and any other ABI
// ENOSYS. x32 shares the native arch value; its numbers (bit 30 set)
// get ENOSYS.
func compileSeccomp(mode SeccompMode) ([]byte, error) {
	if mode == SeccompOff {
		return nil, nil
	}
	native, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	nativeSection, err := abiSection(native, seccompRules(native, mode))
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	program := []bpf.Instruction{bpf.LoadAbsolute{Off: 4, Size: 4}} // seccomp_data.arch
	if compat := compatABI(native); compat != nil {
		compatSection, err := abiSection(compat, seccompRules(compat, mode))
		if err != nil {
			return nil, fmt.Errorf("seccomp: %s rules: %w", compat.Name, err)
		}
		program = append(program,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(native.ID), SkipTrue: 3},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(compat.ID), SkipTrue: 1},
			refuseForeign,
			bpf.Jump{Skip: uint32(len(nativeSection))},
		)
		program = append(append(program, nativeSection...), compatSection...)
	} else {
		program = append(program, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(native.ID), SkipTrue: 1}, refuseForeign)
		program = append(program, nativeSection...)
	}
	raw, err := bpf.Assemble(program)
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

// refuseForeign answers a call of an ABI the filter does not cover.
var refuseForeign = bpf.RetConstant{Val: uint32(seccomp.ActionErrno) | uint32(unix.ENOSYS)}

// compatABI is the 32-bit ABI a native process can also call, which the
// filter covers rather than refuses: i386 on amd64, so that 32-bit
// binaries (old toolchains, multilib tests) run. Others (arm on arm64)
// stay refused.
func compatABI(native *arch.Info) *arch.Info {
	if native.ID == arch.X86_64.ID {
		return arch.I386
	}
	return nil
}

// seccompRules are a mode's rules by the names of an ABI's system calls.
func seccompRules(abi *arch.Info, mode SeccompMode) []seccomp.SyscallGroup {
	groups := []seccomp.SyscallGroup{{
		Action: seccomp.ActionErrno | seccomp.Action(unix.EPERM),
		Names:  known(abi, deniedSyscalls),
	}}
	if mode == SeccompDefault {
		groups = append(groups, userNamespaceRules(abi)...)
	}
	return groups
}

// userNamespaceRules refuse new user namespaces as Docker does:
// unshare and clone with CLONE_NEWUSER get EPERM, and clone3, whose
// flags are in memory a filter cannot read, gets ENOSYS so that glibc
// and Go fall back to clone. clone's flags are its first argument on
// i386 too (CONFIG_CLONE_BACKWARDS swaps the later ones).
func userNamespaceRules(abi *arch.Info) []seccomp.SyscallGroup {
	newUser := seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.BitsSet, Value: unix.CLONE_NEWUSER}}
	return []seccomp.SyscallGroup{
		{
			Action: seccomp.ActionErrno | seccomp.Action(unix.EPERM),
			Names:  known(abi, namespaceSyscalls),
			NamesWithCondtions: []seccomp.NameWithConditions{
				{Name: "unshare", Conditions: newUser},
				{Name: "clone", Conditions: newUser},
			},
		},
		{Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS), Names: known(abi, []string{"clone3"})},
	}
}

// known drops the names an ABI has no system call for (vm86 and iopl
// on arm64, kexec_file_load on i386, the *64 time calls on amd64).
func known(abi *arch.Info, names []string) []string {
	var result []string
	for _, name := range names {
		if _, ok := abi.SyscallNames[name]; ok {
			result = append(result, name)
		}
	}
	return result
}
