package sandbox

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// libraryChainProgram is the filter as the library lays it out (a
// chain of comparisons), with the same rules and ABI dispatch: the
// reference the search tree is checked against.
func libraryChainProgram(mode SeccompMode) ([]bpf.Instruction, error) {
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
	return program, nil
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

// TestSeccompTreeMatchesTheLibrarysFilter runs the filter of each mode
// and the library's chain of the same rules in a BPF interpreter, for
// every system call number of every ABI (native, i386, x32, another)
// with clone flags that do and do not ask for a new user namespace,
// and expects the same answer every time.
func TestSeccompTreeMatchesTheLibrarysFilter(t *testing.T) {
	native, err := arch.GetInfo("")
	if err != nil {
		t.Fatal(err)
	}
	arches := []uint32{uint32(native.ID), uint32(arch.I386.ID), uint32(arch.ARM.ID)}
	flags := []uint64{0, unix.CLONE_NEWUSER, unix.CLONE_NEWUSER | unix.CLONE_NEWNS, unix.CLONE_NEWNS | unix.CLONE_NEWPID, 1 << 40, 1<<40 | unix.CLONE_NEWUSER, ^uint64(0)}
	for _, mode := range []SeccompMode{SeccompDefault, SeccompAllowUserNamespaces} {
		reference, err := libraryChainProgram(mode)
		if err != nil {
			t.Fatal(err)
		}
		encoded, err := compileSeccomp(mode)
		if err != nil {
			t.Fatal(err)
		}
		tree := decodeFilter(t, encoded)
		referenceVM, err := bpf.NewVM(reference)
		if err != nil {
			t.Fatal(err)
		}
		treeVM, err := bpf.NewVM(tree)
		if err != nil {
			t.Fatal(err)
		}
		checked, denied := 0, 0
		for _, a := range arches {
			for nr := uint32(0); nr < 1024; nr++ {
				for _, number := range []uint32{nr, nr | uint32(arch.X32.SeccompMask)} {
					for _, f := range flags {
						data := seccompData(number, a, f)
						want, err1 := referenceVM.Run(data)
						got, err2 := treeVM.Run(data)
						if err1 != nil || err2 != nil || got != want {
							t.Fatalf("%s: arch %#x, call %d, flags %#x: tree %#x (%v), library %#x (%v)", mode, a, number, f, got, err2, want, err1)
						}
						checked++
						if uint32(got) != uint32(seccomp.ActionAllow) {
							denied++
						}
					}
				}
			}
		}
		t.Logf("%s: %d calls answered alike (%d refused); %d instructions against the library's %d", mode, checked, denied, len(tree), len(reference))
	}
}

func decodeFilter(t *testing.T, encoded []byte) []bpf.Instruction {
	t.Helper()
	raw := make([]bpf.RawInstruction, len(encoded)/8)
	for i := range raw {
		b := encoded[8*i:]
		raw[i] = bpf.RawInstruction{Op: binary.NativeEndian.Uint16(b), Jt: b[2], Jf: b[3], K: binary.NativeEndian.Uint32(b[4:])}
	}
	program, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("the filter does not disassemble")
	}
	return program
}

// BenchmarkSeccompInstall installs each program on a fresh thread (as
// a sandbox does per action) and reports the time per install: the
// filter as built, the library's chain of the same rules, and a
// one-instruction filter, the floor. The kernel runs a new filter once
// per system call number when it is installed (to cache what it always
// allows), so the path a number takes through it is what costs.
//
//	go test -run XXX -bench SeccompInstall -benchtime 300x ./sandbox/
func BenchmarkSeccompInstall(b *testing.B) {
	encoded, err := compileSeccomp(SeccompDefault)
	if err != nil {
		b.Fatal(err)
	}
	chain, err := libraryChainProgram(SeccompDefault)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := bpf.Assemble(chain)
	if err != nil {
		b.Fatal(err)
	}
	filters := map[string][]unix.SockFilter{
		"tree":  sockFilters(encoded),
		"chain": make([]unix.SockFilter, len(raw)),
		"floor": {{Code: 0x06, K: 0x7fff0000}},
	}
	for i, r := range raw {
		filters["chain"][i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	times := map[string]time.Duration{}
	b.ResetTimer()
	for range b.N {
		for _, name := range []string{"tree", "chain", "floor"} {
			times[name] += installOnFreshThread(b, filters[name])
		}
	}
	b.StopTimer()
	for name, d := range times {
		b.ReportMetric(float64(d)/float64(b.N)/1e3, name+"-us")
	}
	b.ReportMetric(float64(times["tree"])/float64(times["chain"]), "x-chain")
	b.ReportMetric(0, "ns/op")
}

func sockFilters(encoded []byte) []unix.SockFilter {
	filters := make([]unix.SockFilter, len(encoded)/8)
	for i := range filters {
		b := encoded[8*i:]
		filters[i] = unix.SockFilter{Code: binary.NativeEndian.Uint16(b), Jt: b[2], Jf: b[3], K: binary.NativeEndian.Uint32(b[4:])}
	}
	return filters
}

func installOnFreshThread(b *testing.B, filter []unix.SockFilter) time.Duration {
	done := make(chan error)
	var elapsed time.Duration
	go func() {
		// Never unlocked: the filtered thread dies with the goroutine.
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			done <- err
			return
		}
		program := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
		start := time.Now()
		_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&program)))
		elapsed = time.Since(start)
		if errno != 0 {
			done <- fmt.Errorf("seccomp: %w", errno)
			return
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return elapsed
}
