package sandbox

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func init() {
	moreHelpers["connect-unix"] = func(args []string) int {
		for _, path := range args {
			conn, err := net.Dial("unix", path)
			if err != nil {
				fmt.Println(path, "refused")
				continue
			}
			conn.Close()
			fmt.Println(path, "connected")
		}
		return 0
	}
}

// boundTestDir makes a directory inside a host tree the sandbox shows:
// under /opt as root; as an ordinary user, who cannot write there, in
// a directory of its own home that the runner is told to bind. It
// returns the directory and what to configure.
func boundTestDir(t *testing.T) (string, func(*Config)) {
	t.Helper()
	parent, configure := "/opt", func(*Config) {}
	if os.Geteuid() != 0 {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		parent = home
	}
	dir, err := os.MkdirTemp(parent, "bitzel-socket-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		configure = func(c *Config) { c.HostPaths = append(append([]string{}, DefaultHostPaths...), dir) }
	}
	return dir, configure
}

func listenUnix(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	// World-writable, as many daemons' sockets are: only the bind's
	// read-only flag, which connect(2) ignores, stood in the way.
	if err := os.Chmod(path, 0o777); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// TestHostUnixSocketsUnreachable: a host daemon's socket under a bound
// tree must not be reachable from an action, and the tree must still be
// visible.
func TestHostUnixSocketsUnreachable(t *testing.T) {
	dir, configure := boundTestDir(t)
	sockets := []string{filepath.Join(dir, "daemon.sock")}
	if err := os.WriteFile(filepath.Join(dir, "visible"), []byte("tree\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, socket := range sockets {
		listenUnix(t, socket)
	}
	forEachUserNamespaceMode(t, func(t *testing.T, userNamespace func(*Config)) {
		e := newEnv(t, configure, userNamespace)
		// The tree's files are read in the same sandbox.
		script := fmt.Sprintf(`cat %s/visible; ./helper %s`, dir, strings.Join(sockets, " "))
		o := e.run(&Spec{
			Mounts: []Mount{e.mount("", e.helperLayer())},
			Argv:   []string{"/bin/sh", "-c", script},
			Env:    []string{"PATH=/usr/bin:/bin", helperEnv + "=connect-unix"},
		})
		want := "tree\n"
		for _, socket := range sockets {
			want += socket + " refused\n"
		}
		if o.stdout != want {
			t.Errorf("in the sandbox:\n%s(stderr %s)\nwant:\n%s", o.stdout, o.stderr, want)
		}
	})
}

// TestHostSubmountsKept: a tree with a mount below it (Docker's
// /etc/resolv.conf) cannot be overlaid in a user namespace; it is bound
// with its mounts, and the worker says that its sockets are reachable.
func TestHostSubmountsKept(t *testing.T) {
	dir, configure := boundTestDir(t)
	tree := filepath.Dir(dir)
	if os.Geteuid() != 0 {
		// Only root can mount on the host: check that a tree
		// without mounts below it is not reported.
		if note := UnixSocketExposure([]string{dir}); note != "" {
			t.Errorf("UnixSocketExposure of %s: %q, want none", dir, note)
		}
		return
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "mode=0755,size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(sub, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(sub, "visible"), []byte("submount\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if note := UnixSocketExposure([]string{tree}); !strings.Contains(note, sub) {
		t.Errorf("UnixSocketExposure of %s: %q, want it to name %s", tree, note, sub)
	}
	forEachUserNamespaceMode(t, func(t *testing.T, userNamespace func(*Config)) {
		o := newEnv(t, configure, userNamespace).shell("cat " + filepath.Join(sub, "visible"))
		if o.stdout != "submount\n" {
			t.Errorf("the mount below %s in the sandbox: %q (stderr %q)", tree, o.stdout, o.stderr)
		}
	})
}
