package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBinDir != "" {
		os.RemoveAll(builtBinDir)
	}
	os.Exit(code)
}

// builtBinariesChildEnv makes TestBuiltBinariesAreRemoved's child run
// build the binaries and stop.
const builtBinariesChildEnv = "BITZEL_E2E_BUILT_BINARIES_CHILD"

// Without BITZEL_BIN_DIR the tests build the binaries into a temporary
// directory; nothing of it is left when the test binary exits. The
// child's go is a stand-in that builds nothing, so that this test needs
// neither a toolchain nor time.
func TestBuiltBinariesAreRemoved(t *testing.T) {
	if os.Getenv(builtBinariesChildEnv) != "" {
		if dir := binaries(t); !strings.HasPrefix(filepath.Base(dir), "bitzel-e2e-bin-") {
			t.Fatalf("binaries in %s, not a fresh build", dir)
		}
		return
	}
	tmp, fakeGo := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(fakeGo, "go"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBuiltBinariesAreRemoved$", "-test.count=1")
	for _, v := range os.Environ() {
		if !strings.HasPrefix(v, "BITZEL_BIN_DIR=") && !strings.HasPrefix(v, "TMPDIR=") && !strings.HasPrefix(v, "PATH=") {
			cmd.Env = append(cmd.Env, v)
		}
	}
	cmd.Env = append(cmd.Env, builtBinariesChildEnv+"=1", "TMPDIR="+tmp, "PATH="+fakeGo+":/usr/bin:/bin")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the test binary left %v in its TMPDIR", left)
	}
}
