package sandbox

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// moreHelpers are helper modes of other test files (runHelper).
var moreHelpers = map[string]func(args []string) int{
	"syscalls": helperSyscalls,
	"addkey":   helperAddKey,
	"findkey":  helperFindKey,
}

const testKeyDescription = "bitzel-test-secret"

// helperSyscalls prints "name errno" for system calls the default
// filter denies that an unprivileged process may otherwise make.
func helperSyscalls([]string) int {
	report := func(name string, err error) {
		var errno unix.Errno
		switch {
		case err == nil:
			fmt.Println(name, "ok")
		case errors.As(err, &errno):
			fmt.Println(name, unix.ErrnoName(errno))
		default:
			fmt.Println(name, err)
		}
	}
	_, err := unix.AddKey("user", testKeyDescription, []byte("x"), unix.KEY_SPEC_SESSION_KEYRING)
	report("add_key", err)
	_, err = unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, false)
	report("keyctl", err)
	attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_TASK_CLOCK,
		Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{})), Bits: unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv}
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	report("perf_event_open", err)
	closeIfOpen(fd, err)
	const uffdUserModeOnly = 1
	r, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|uffdUserModeOnly, 0, 0)
	report("userfaultfd", errnoOrNil(errno))
	closeIfOpen(int(r), errnoOrNil(errno))
	var params [120]byte // struct io_uring_params
	r, _, errno = unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0)
	report("io_uring_setup", errnoOrNil(errno))
	closeIfOpen(int(r), errnoOrNil(errno))
	// A NULL argument: EINVAL when clone3 is allowed.
	_, _, errno = unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
	report("clone3", errnoOrNil(errno))
	report("unshare_user", unix.Unshare(unix.CLONE_NEWUSER))
	return 0
}

func errnoOrNil(errno unix.Errno) error {
	if errno == 0 {
		return nil
	}
	return errno
}

func closeIfOpen(fd int, err error) {
	if err == nil && fd >= 0 {
		unix.Close(fd)
	}
}

func helperAddKey([]string) int {
	if _, err := unix.AddKey("user", testKeyDescription, []byte("secret"), unix.KEY_SPEC_USER_KEYRING); err != nil {
		fmt.Println("add_key:", err)
		return 0
	}
	fmt.Println("added")
	return 0
}

func helperFindKey([]string) int {
	for _, keyring := range []int{unix.KEY_SPEC_USER_KEYRING, unix.KEY_SPEC_SESSION_KEYRING} {
		if id, err := unix.KeyctlSearch(keyring, "user", testKeyDescription, 0); err == nil {
			fmt.Printf("found key %d in keyring %d\n", id, keyring)
			return 0
		}
	}
	fmt.Println("not found")
	return 0
}

func syscallResults(t *testing.T, e *env) map[string]string {
	t.Helper()
	o := e.run(&Spec{
		Mounts: []Mount{e.mount("", e.helperLayer())},
		Argv:   []string{"./helper"},
		Env:    []string{helperEnv + "=syscalls"},
	})
	o.expectExit(t, 0)
	results := map[string]string{}
	for _, line := range lines(o.stdout) {
		name, result, _ := strings.Cut(line, " ")
		results[name] = result
	}
	return results
}

// forEachUserNamespaceMode runs a test with one user namespace per
// sandbox (no cgroups) and, where this user has cgroups (root), with
// the one user namespace all sandboxes share.
func forEachUserNamespaceMode(t *testing.T, test func(t *testing.T, configure func(*Config))) {
	t.Run("own-user-namespace", func(t *testing.T) { test(t, func(*Config) {}) })
	manager, err := DetectCgroups(CgroupsAuto, "bitzel-test")
	if err != nil {
		if os.Geteuid() == 0 {
			t.Fatalf("running as root on a host with cgroups, but none usable: %v", err)
		}
		return
	}
	manager.Close()
	t.Run("shared-user-namespace", func(t *testing.T) {
		test(t, func(c *Config) {
			m, err := DetectCgroups(CgroupsAuto, "bitzel-test")
			if err != nil {
				t.Fatal(err)
			}
			c.Cgroups = m
		})
	})
}

func TestSeccompDeniesKernelFacilities(t *testing.T) {
	forEachUserNamespaceMode(t, func(t *testing.T, configure func(*Config)) {
		results := syscallResults(t, newEnv(t, configure))
		want := map[string]string{
			"add_key": "EPERM", "keyctl": "EPERM", "perf_event_open": "EPERM",
			"userfaultfd": "EPERM", "io_uring_setup": "EPERM", "clone3": "ENOSYS",
			"unshare_user": "EPERM",
		}
		for name, errno := range want {
			if results[name] != errno {
				t.Errorf("%s in the sandbox: %s, want %s", name, results[name], errno)
			}
		}
	})
}

func TestSeccompModes(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Seccomp = SeccompAllowUserNamespaces })
	results := syscallResults(t, e)
	// A Go program is multi-threaded: the kernel's EINVAL means the
	// filter let unshare through.
	if results["unshare_user"] != "EINVAL" || results["clone3"] != "EINVAL" || results["add_key"] != "EPERM" {
		t.Errorf("allow-user-namespaces: %v, want unshare and clone3 allowed (EINVAL), add_key denied", results)
	}
	o := e.shell(`unshare -rm sh -c 'mount -t tmpfs none /tmp && echo mounted'`)
	o.expectExit(t, 0)
	if strings.TrimSpace(o.stdout) != "mounted" {
		t.Errorf("allow-user-namespaces: unshare -rm mount printed %q", o.stdout)
	}
	results = syscallResults(t, newEnv(t, func(c *Config) { c.Seccomp = SeccompOff }))
	if results["add_key"] != "ok" || results["clone3"] != "EINVAL" {
		t.Errorf("off: %v, want add_key and clone3 allowed", results)
	}
	if _, err := NewNamespaceRunner(Config{StateDir: t.TempDir(), Seccomp: "strict"}); err == nil || !strings.Contains(err.Error(), `"strict"`) {
		t.Errorf("an unknown seccomp mode: %v, want an error naming it", err)
	}
}

// TestNoNestedUserNamespaceOrMount: unshare -r would give the action a
// full capability set in a namespace of its own, and with it mount.
func TestNoNestedUserNamespaceOrMount(t *testing.T) {
	forEachUserNamespaceMode(t, func(t *testing.T, configure func(*Config)) {
		o := newEnv(t, configure).shell(`
			unshare -r true 2>/dev/null && echo "unshare -r works"
			unshare -U true 2>/dev/null && echo "unshare -U works"
			unshare -rm mount -t tmpfs none /tmp 2>/dev/null && echo "nested mount works"
			mount -t tmpfs none /tmp 2>/dev/null && echo "mount works"
			echo done`)
		o.expectExit(t, 0)
		if strings.TrimSpace(o.stdout) != "done" {
			t.Errorf("in the sandbox:\n%s", o.stdout)
		}
	})
}

// TestCompilerStillWorks: the filter must not get in a build's way.
func TestCompilerStillWorks(t *testing.T) {
	forEachUserNamespaceMode(t, func(t *testing.T, configure func(*Config)) {
		o := newEnv(t, configure).shell(`cd /tmp && printf '#include <stdio.h>\nint main(void){puts("hello");return 0;}\n' > h.c && gcc -o h h.c && ./h`)
		o.expectExit(t, 0)
		if strings.TrimSpace(o.stdout) != "hello" {
			t.Errorf("gcc in the sandbox: %q (stderr %q)", o.stdout, o.stderr)
		}
	})
}

// TestKeyringNotSharedBetweenActions: with cgroups all sandboxes share
// one user namespace and so uid 0's user keyring.
func TestKeyringNotSharedBetweenActions(t *testing.T) {
	forEachUserNamespaceMode(t, func(t *testing.T, configure func(*Config)) {
		e := newEnv(t, configure)
		helper := e.helperLayer()
		for _, mode := range []string{"addkey", "findkey"} {
			o := e.run(&Spec{
				Mounts: []Mount{e.mount("", helper)},
				Argv:   []string{"./helper"},
				Env:    []string{helperEnv + "=" + mode},
			})
			o.expectExit(t, 0)
			if mode == "findkey" && strings.TrimSpace(o.stdout) != "not found" {
				t.Errorf("a later action sees an earlier one's key: %s", o.stdout)
			}
		}
	})
}
