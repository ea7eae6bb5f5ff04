package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	// Every server a test started is stopped by its end; one that is
	// still running would outlive the test binary, holding ports,
	// cgroups and a deleted data directory.
	for _, leaked := range childServers() {
		fmt.Fprintf(os.Stderr, "e2e: a server outlived its test: pid %d: %s\n", leaked.pid, leaked.args)
		syscall.Kill(leaked.pid, syscall.SIGKILL)
		code = 1
	}
	if builtBinDir != "" {
		os.RemoveAll(builtBinDir)
	}
	os.Exit(code)
}

type childServer struct {
	pid  int
	args string
}

// childServers lists this process's children that run bitzel-worker.
func childServers() []childServer {
	var servers []childServer
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if filepath.Base(exe) != "bitzel-worker" {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		servers = append(servers, childServer{pid, strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")})
	}
	return servers
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
