package sandbox

import (
	"fmt"
	"slices"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
)

// The filter dispatches on the system call number through a binary
// search tree, not a chain of comparisons (the library's layout). The
// kernel runs a new filter once per system call number when it is
// installed, to cache which calls it always allows, and a sandbox
// installs one per action: along a chain of the 60-odd denied calls
// that took 0.18 ms per install, along a tree of depth 7 a fraction of
// it (BenchmarkSeccompInstall). The rules are the library's
// SyscallGroups, and TestSeccompTreeMatchesTheLibrarysFilter checks
// that both programs answer every call of every ABI alike.

// syscallRule is what the filter does for one system call number.
type syscallRule struct {
	number uint32
	action seccomp.Action
	// flagsDenied, when set, applies action only to calls whose
	// argument flagsArgument has one of these bits (CLONE_NEWUSER of
	// clone and unshare); other calls are allowed.
	flagsArgument int
	flagsDenied   uint64
}

// syscallRules flattens groups into one rule per number, the first
// group naming a number deciding it, as in the library's chain.
func syscallRules(abi *arch.Info, groups []seccomp.SyscallGroup) ([]syscallRule, error) {
	byNumber := map[uint32]syscallRule{}
	add := func(name string, rule syscallRule) error {
		number, ok := abi.SyscallNames[name]
		if !ok {
			return fmt.Errorf("%s has no system call %s", abi.Name, name)
		}
		rule.number = uint32(number | abi.SeccompMask)
		if _, decided := byNumber[rule.number]; !decided {
			byNumber[rule.number] = rule
		}
		return nil
	}
	for _, group := range groups {
		for _, name := range group.Names {
			if err := add(name, syscallRule{action: group.Action}); err != nil {
				return nil, err
			}
		}
		for _, nc := range group.NamesWithCondtions {
			if len(nc.Conditions) != 1 || nc.Conditions[0].Operation != seccomp.BitsSet {
				return nil, fmt.Errorf("%s: only one BitsSet condition is supported", nc.Name)
			}
			c := nc.Conditions[0]
			if err := add(nc.Name, syscallRule{action: group.Action, flagsArgument: int(c.Argument), flagsDenied: c.Value}); err != nil {
				return nil, err
			}
		}
	}
	rules := make([]syscallRule, 0, len(byNumber))
	for _, rule := range byNumber {
		rules = append(rules, rule)
	}
	slices.SortFunc(rules, func(a, b syscallRule) int { return int(a.number) - int(b.number) })
	return rules, nil
}

// searchTree returns a program that, with the system call number in
// the accumulator, returns each rule's action and allows every call
// no rule names.
func searchTree(rules []syscallRule) ([]bpf.Instruction, error) {
	const leaf = 3
	if len(rules) <= leaf {
		var program []bpf.Instruction
		for _, rule := range rules {
			action := ruleAction(rule)
			program = append(program, bpf.JumpIf{Cond: bpf.JumpEqual, Val: rule.number, SkipFalse: uint8(len(action))})
			program = append(program, action...)
		}
		return append(program, bpf.RetConstant{Val: uint32(seccomp.ActionAllow)}), nil
	}
	middle := len(rules) / 2
	below, err := searchTree(rules[:middle])
	if err != nil {
		return nil, err
	}
	above, err := searchTree(rules[middle:])
	if err != nil {
		return nil, err
	}
	if len(below) > 255 {
		return nil, fmt.Errorf("seccomp: a subtree of %d instructions is too long to jump over", len(below))
	}
	jump := bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: rules[middle].number, SkipTrue: uint8(len(below))}
	return append(append([]bpf.Instruction{jump}, below...), above...), nil
}

// ruleAction returns the rule's action, or for a flags rule: its
// action if the argument (both halves of the 64-bit value, as the
// library checks it) has a denied bit, else allow.
func ruleAction(rule syscallRule) []bpf.Instruction {
	ret := bpf.RetConstant{Val: uint32(rule.action)}
	if rule.flagsDenied == 0 {
		return []bpf.Instruction{ret}
	}
	argument := uint32(16 + 8*rule.flagsArgument) // seccomp_data.args[n], little-endian
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: argument + 4, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: uint32(rule.flagsDenied >> 32), SkipTrue: 2},
		bpf.LoadAbsolute{Off: argument, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: uint32(rule.flagsDenied), SkipFalse: 1},
		ret,
		bpf.RetConstant{Val: uint32(seccomp.ActionAllow)},
	}
}

// abiSection is an ABI's part of the filter: load the number, refuse
// x32's numbers on x86-64 (they share its arch value), search.
func abiSection(abi *arch.Info, groups []seccomp.SyscallGroup) ([]bpf.Instruction, error) {
	rules, err := syscallRules(abi, groups)
	if err != nil {
		return nil, err
	}
	tree, err := searchTree(rules)
	if err != nil {
		return nil, err
	}
	section := []bpf.Instruction{bpf.LoadAbsolute{Off: 0, Size: 4}} // seccomp_data.nr
	if abi.ID == arch.X86_64.ID {
		section = append(section,
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: uint32(arch.X32.SeccompMask), SkipFalse: 1},
			refuseForeign)
	}
	return append(section, tree...), nil
}
