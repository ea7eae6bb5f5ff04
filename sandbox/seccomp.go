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
// the struct sock_filter array PID 1 installs, so that PID 1 (a small
// binary started per action) links no BPF assembler.
// github.com/elastic/go-seccomp-bpf builds it from syscall names with
// argument conditions, pure Go, no libseccomp (cgo) and no
// hand-assembled jumps.
//
// The program dispatches on seccomp_data.arch: the native ABI gets the
// library's program, i386 (int 0x80 and sysenter on amd64, which a
// 32-bit binary uses) a section with the same rules by its own
// numbers, and any other ABI ENOSYS. x32 shares the native arch value;
// the library's program refuses its numbers (bit 30 set) with ENOSYS.
func compileSeccomp(mode SeccompMode) ([]byte, error) {
	if mode == SeccompOff {
		return nil, nil
	}
	native, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	policy := seccomp.Policy{DefaultAction: seccomp.ActionAllow, Syscalls: seccompRules(native, mode)}
	nativeProgram, err := policy.Assemble()
	if err != nil {
		return nil, fmt.Errorf("seccomp: assemble policy: %w", err)
	}
	refuse := bpf.RetConstant{Val: uint32(seccomp.ActionErrno) | uint32(unix.ENOSYS)}
	var program []bpf.Instruction
	if compat := compatABI(native); compat != nil {
		compatProgram, err := assembleForeignRules(compat, seccompRules(compat, mode))
		if err != nil {
			return nil, fmt.Errorf("seccomp: assemble %s rules: %w", compat.Name, err)
		}
		program = []bpf.Instruction{
			bpf.LoadAbsolute{Off: 4, Size: 4}, // seccomp_data.arch
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(native.ID), SkipTrue: 3},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(compat.ID), SkipTrue: 1},
			refuse,
			bpf.Jump{Skip: uint32(len(nativeProgram))},
		}
		program = append(append(program, nativeProgram...), compatProgram...)
	} else {
		// The library's program allows every call of a foreign ABI,
		// which would reach keyctl by another number: refuse those
		// first.
		program = []bpf.Instruction{
			bpf.LoadAbsolute{Off: 4, Size: 4}, // seccomp_data.arch
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(native.ID), SkipTrue: 1},
			refuse,
		}
		program = append(program, nativeProgram...)
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

// assembleForeignRules is the library's SyscallGroup.Assemble for an
// ABI other than the running one (its Policy always assembles for
// runtime.GOARCH), from the library's own pieces: that ABI's syscall
// table, SyscallWithConditions and the label-resolving Program. The
// section starts by loading the syscall number and ends allowing
// what no rule matched.
func assembleForeignRules(abi *arch.Info, groups []seccomp.SyscallGroup) ([]bpf.Instruction, error) {
	p := seccomp.NewProgram()
	for _, group := range groups {
		var calls []seccomp.SyscallWithConditions
		for _, name := range group.Names {
			calls = append(calls, seccomp.SyscallWithConditions{Num: uint32(abi.SyscallNames[name] | abi.SeccompMask)})
		}
		for _, nc := range group.NamesWithCondtions {
			number, ok := abi.SyscallNames[nc.Name]
			if !ok {
				return nil, fmt.Errorf("%s has no system call %s", abi.Name, nc.Name)
			}
			calls = append(calls, seccomp.SyscallWithConditions{Num: uint32(number | abi.SeccompMask), Conditions: []seccomp.ArgumentConditions{nc.Conditions}})
		}
		if len(calls) == 0 {
			continue
		}
		match, next := p.NewLabel(), p.NewLabel()
		for i, call := range calls {
			call.Assemble(&p, i < len(calls)-1, match, next)
		}
		p.SetLabel(match)
		p.Ret(group.Action)
		p.SetLabel(next)
	}
	p.Ret(seccomp.ActionAllow)
	instructions, err := p.Assemble()
	if err != nil {
		return nil, err
	}
	return append([]bpf.Instruction{bpf.LoadAbsolute{Off: 0, Size: 4}}, instructions...), nil // seccomp_data.nr
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
