// Package testsupport holds what the package tests and the e2e tests
// both need, so that it is written once.
package testsupport

import (
	"debug/elf"
	"errors"
)

// StaticBusybox locates Debian's busybox-static, which the test script
// installs: a userland that needs nothing from the host. A dynamically
// linked busybox is passed over, since it needs the host's libc.
func StaticBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			return p, nil
		}
	}
	return "", errors.New("no statically linked busybox: install Debian's busybox-static (the test script does)")
}
