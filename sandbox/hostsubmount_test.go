package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// inMountNamespaceEnv marks a test binary re-executed by
// runWithMountCapability.
const inMountNamespaceEnv = "BITZEL_TEST_IN_MOUNT_NAMESPACE"

// runWithMountCapability re-executes the running test in a user and
// mount namespace of its own in which the ordinary user it runs as
// keeps its uid and gains CAP_SYS_ADMIN (ambient, so that it survives
// exec): it can then mount below a tree as root would on the host,
// and those mounts are locked in every sandbox's user namespace as
// the host's are. It reports whether the caller is that re-executed
// test and should go on.
func runWithMountCapability(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() == 0 || os.Getenv(inMountNamespaceEnv) != "" {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), inMountNamespaceEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: os.Geteuid(), HostID: os.Geteuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: os.Getegid(), HostID: os.Getegid(), Size: 1}},
		AmbientCaps: []uintptr{unix.CAP_SYS_ADMIN},
	}
	out, err := cmd.CombinedOutput()
	t.Logf("in a user and mount namespace of its own:\n%s", out)
	if err != nil {
		t.Fatalf("the test in a user and mount namespace of its own: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("the test in a user and mount namespace of its own did not pass")
	}
	return false
}

// TestHostSubmountsKeptButTheirSocketsUnreachable: a host tree with a
// mount below it (Docker's /etc/resolv.conf) cannot be overlaid whole in
// a user namespace. Its files, the mount's included, must stay visible,
// and no Unix listener in it may be reachable: at the top, in a
// sub-directory, in the mount and in a directory of the mount.
func TestHostSubmountsKeptButTheirSocketsUnreachable(t *testing.T) {
	if !runWithMountCapability(t) {
		return
	}
	dir, configure := boundTestDir(t)
	tree := dir
	if os.Geteuid() == 0 {
		// /opt itself, as Docker's /etc, has the mount below it.
		tree = filepath.Dir(dir)
	}
	sub := filepath.Join(dir, "sub")
	for _, d := range []string{filepath.Join(dir, "inner"), sub} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "mode=0755,size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(sub, unix.MNT_DETACH) })
	if err := os.Mkdir(filepath.Join(sub, "nested"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		filepath.Join(dir, "visible"):           "top\n",
		filepath.Join(dir, "inner", "visible"):  "inner\n",
		filepath.Join(sub, "visible"):           "submount\n",
		filepath.Join(sub, "nested", "visible"): "nested\n",
	}
	var cat []string
	var want strings.Builder
	for _, path := range []string{filepath.Join(dir, "visible"), filepath.Join(dir, "inner", "visible"), filepath.Join(sub, "visible"), filepath.Join(sub, "nested", "visible")} {
		if err := os.WriteFile(path, []byte(files[path]), 0o644); err != nil {
			t.Fatal(err)
		}
		cat = append(cat, path)
		want.WriteString(files[path])
	}
	if err := os.Symlink("inner/visible", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	want.WriteString("inner\n")
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	want.WriteString("fifo absent\n")
	sockets := []string{
		filepath.Join(dir, "top.sock"),
		filepath.Join(dir, "inner", "deep.sock"),
		filepath.Join(sub, "mounted.sock"),
		filepath.Join(sub, "nested", "deeper.sock"),
	}
	for _, socket := range sockets {
		listenUnix(t, socket)
		want.WriteString(socket + " refused\n")
	}
	if note := HostTreesRebuilt([]string{tree}); !strings.Contains(note, sub) {
		t.Errorf("HostTreesRebuilt of %s: %q, want it to name %s", tree, note, sub)
	}
	if note := HostTreesRebuilt([]string{filepath.Join(dir, "inner")}); note != "" {
		t.Errorf("HostTreesRebuilt of a tree without mounts below it: %q, want none", note)
	}
	script := fmt.Sprintf(`cat %s; cat %s; if [ -e %s ]; then echo fifo present; else echo fifo absent; fi; ./helper %s`,
		strings.Join(cat, " "), filepath.Join(dir, "link"), fifo, strings.Join(sockets, " "))
	forEachUserNamespaceMode(t, func(t *testing.T, userNamespace func(*Config)) {
		e := newEnv(t, configure, userNamespace)
		o := e.run(&Spec{
			Mounts: []Mount{e.mount("", e.helperLayer())},
			Argv:   []string{"/bin/sh", "-c", script},
			Env:    []string{"PATH=/usr/bin:/bin", helperEnv + "=connect-unix"},
		})
		if o.stdout != want.String() {
			t.Errorf("in the sandbox:\n%s(stderr %s)\nwant:\n%s", o.stdout, o.stderr, want.String())
		}
	})
}
