package sandbox

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
