// Package testsupport holds what the package tests, the e2e tests and
// the benchmark harness share, so that it is written once. (The REAPI
// client they share is client/, the one the submit command uses.)
package testsupport

import (
	"debug/elf"
	"errors"
	"os"
	"testing"
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

// StaticBusyboxData is the content of StaticBusybox, for a test that
// puts it in an input tree or a layer; a missing one fails t.
func StaticBusyboxData(t testing.TB) []byte {
	t.Helper()
	path, err := StaticBusybox()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
