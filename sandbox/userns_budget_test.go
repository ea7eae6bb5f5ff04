package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// perUserNamespaceResources are the kernel resources charged per user
// namespace, up the chain of its owners, that an action can take
// without any privilege: each acquires one instance and holds it (for
// as long as the calling process lives, or its IPC namespace does).
var perUserNamespaceResources = map[string]struct {
	acquire func(n int) error
	// hostLimit is an upper bound of the instances the worker's uid
	// could hold at all, from the host's limit.
	hostLimit func(t *testing.T) int
	// release undoes acquire(n) outside a sandbox, where the worker
	// checks it still gets one.
	release func(n int)
}{
	"inotify": {
		acquire: func(int) error {
			_, err := unix.InotifyInit1(unix.IN_CLOEXEC)
			return err
		},
		hostLimit: func(t *testing.T) int { return readIntFile(t, "/proc/sys/user/max_inotify_instances") },
	},
	// POSIX message queues are charged against RLIMIT_MSGQUEUE in
	// bytes of their maximum size, per user namespace since Linux
	// 5.14; each queue here reserves one message of 8 KiB.
	"mqueue": {
		acquire: func(n int) error {
			_, err := mqOpen(fmt.Sprintf("bitzel-test-%d-%d", os.Getpid(), n))
			return err
		},
		hostLimit: func(t *testing.T) int {
			var limit unix.Rlimit
			if err := unix.Getrlimit(unix.RLIMIT_MSGQUEUE, &limit); err != nil {
				t.Fatal(err)
			}
			return int(limit.Cur / mqMessageSize)
		},
		release: func(n int) {
			name, _ := unix.BytePtrFromString(fmt.Sprintf("bitzel-test-%d-%d", os.Getpid(), n))
			unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(name)), 0, 0)
		},
	},
}

const mqMessageSize = 8192

// mqOpen creates a POSIX message queue of one 8 KiB message. The
// system call takes the name without glibc's leading slash, and needs
// no mounted mqueue file system.
func mqOpen(name string) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return -1, err
	}
	attr := [8]int64{0, 1, mqMessageSize} // struct mq_attr: flags, maxmsg, msgsize, curmsgs, reserved
	fd, _, errno := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(p)),
		unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600, uintptr(unsafe.Pointer(&attr)), 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

func init() {
	// userns-hog KIND acquires instances of KIND until refused, records how
	// many it got in ./held (in its upper directory, where the test
	// reads it) and holds them until killed.
	moreHelpers["userns-hog"] = func(args []string) int {
		resource := perUserNamespaceResources[args[0]]
		held := 0
		var refusal error
		for {
			if err := resource.acquire(held); err != nil {
				refusal = err
				break
			}
			held++
		}
		fmt.Println(held, refusal)
		if err := os.WriteFile("held.tmp", []byte(strconv.Itoa(held)), 0o644); err != nil {
			fmt.Println(err)
			return 1
		}
		if err := os.Rename("held.tmp", "held"); err != nil {
			fmt.Println(err)
			return 1
		}
		for {
			unix.Pause()
		}
	}
	// userns-one KIND acquires one instance of KIND.
	moreHelpers["userns-one"] = func(args []string) int {
		if err := perUserNamespaceResources[args[0]].acquire(0); err != nil {
			fmt.Println("refused:", err)
			return 0
		}
		fmt.Println("ok")
		return 0
	}
}

// TestActionCannotExhaustInotifyForOthers: inotify instances are
// charged per user namespace and up the chain of owners, so an action
// that opens them until refused could leave none to the other actions
// and to the worker's own uid (host root when the worker runs as root).
// While such an action holds all it could get, another action and the
// worker must still get one, and the hog must have got fewer than the
// host's limit. With cgroups and without; as root and rootless.
func TestActionCannotExhaustInotifyForOthers(t *testing.T) {
	testActionCannotExhaustForOthers(t, "inotify")
}

// TestActionCannotExhaustMessageQueuesForOthers: the same for POSIX
// message queues, whose bytes count against RLIMIT_MSGQUEUE of the
// worker's uid: without a share of its own, one action creating queues
// until refused leaves the worker and every other action none.
func TestActionCannotExhaustMessageQueuesForOthers(t *testing.T) {
	testActionCannotExhaustForOthers(t, "mqueue")
}

// Long on purpose: one scenario whose steps build on each other (each
// needs the state the previous left), read top to bottom.
func testActionCannotExhaustForOthers(t *testing.T, kind string) {
	resource := perUserNamespaceResources[kind]
	hostLimit := resource.hostLimit(t)
	modes := []struct {
		name      string
		cgroups   bool
		perAction bool
	}{
		{name: "no-cgroups", perAction: true},
		{name: "cgroups", cgroups: true, perAction: true},
	}
	if _, err := DetectCgroups(CgroupsAuto, "bitzel-test"); err != nil {
		if os.Geteuid() == 0 {
			t.Fatalf("running as root on a host with cgroups, but none usable: %v", err)
		}
		// An ordinary user has no cgroups here: the worker runs
		// without them, as the first mode, and the others do not
		// exist for it.
		t.Logf("no cgroups for uid %d (%v): only the mode without them", os.Geteuid(), err)
		modes = modes[:1]
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			configure := func(c *Config) { c.Slots = 2 }
			if mode.cgroups {
				manager, err := DetectCgroups(CgroupsAuto, "bitzel-test")
				if err != nil {
					t.Fatal(err)
				}
				configure = func(c *Config) { c.Slots, c.Cgroups = 2, manager }
			}
			e := newEnv(t, configure)
			helper := e.helperLayer()
			hogMount := e.mount("", helper)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hogDone := make(chan struct{})
			var hogErr error
			go func() {
				defer close(hogDone)
				_, hogErr = e.runner.Run(ctx, &Spec{
					Mounts:     []Mount{hogMount},
					Argv:       []string{"./helper", kind},
					Env:        []string{helperEnv + "=userns-hog"},
					StdoutPath: filepath.Join(e.base, "hog.stdout"),
					StderrPath: filepath.Join(e.base, "hog.stderr"),
				})
			}()
			held := filepath.Join(hogMount.UpperDir, "held")
			for {
				if _, err := os.Stat(held); err == nil {
					break
				}
				select {
				case <-hogDone:
					out, _ := os.ReadFile(filepath.Join(e.base, "hog.stdout"))
					t.Fatalf("the hog ended before holding its %s instances: %v, stdout %q", kind, hogErr, out)
				case <-time.After(10 * time.Millisecond):
				}
			}
			got := readIntFile(t, held)
			// The hog holds what it got: the worker's uid and another
			// action must still get one.
			if err := resource.acquire(1 << 20); err != nil {
				t.Errorf("the worker's own %s while an action holds %d: %v", kind, got, err)
			}
			if resource.release != nil {
				resource.release(1 << 20)
			}
			other := e.run(&Spec{
				Mounts: []Mount{e.mount("", helper)},
				Argv:   []string{"./helper", kind},
				Env:    []string{helperEnv + "=userns-one"},
			})
			if mode.perAction && other.stdout != "ok\n" {
				t.Errorf("another action's %s while one holds %d: %q (stderr %q)", kind, got, other.stdout, other.stderr)
			}
			cancel()
			<-hogDone
			if got < 1 || got >= hostLimit {
				t.Errorf("the hog got %d %s instances, want at least 1 and fewer than the host's %d", got, kind, hostLimit)
			}
			t.Logf("the hog got %d of the host's %d %s instances; another action: %q", got, hostLimit, kind, strings.TrimSpace(other.stdout))
		})
	}
}

func readIntFile(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

func init() {
	// userns-limits prints "NAME VALUE" for every per-user-namespace
	// limit as the action's own user namespace has it.
	moreHelpers["userns-limits"] = func([]string) int {
		entries, err := os.ReadDir("/proc/sys/user")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		for _, entry := range entries {
			data, err := os.ReadFile("/proc/sys/user/" + entry.Name())
			if err != nil {
				fmt.Println(err)
				return 1
			}
			fmt.Println(entry.Name(), strings.TrimSpace(string(data)))
		}
		return 0
	}
}

// TestEveryPerUserNamespaceCountIsShared: besides inotify and message
// queues, the kernel counts user, mount, pid, network, IPC, UTS, cgroup
// and time namespaces, and fanotify groups and marks, per user
// namespace up the chain of owners. An action's own user namespace must
// carry its share of each, as its /proc/sys/user shows, so that none
// can take what the worker's uid has for all: a new user namespace
// starts at the kernel's maximum (INT_MAX) for every count.
func TestEveryPerUserNamespaceCountIsShared(t *testing.T) {
	budget, err := NewUserNamespaceBudget(2)
	if err != nil {
		t.Fatal(err)
	}
	configs := map[string]func(*Config){"no-cgroups": func(c *Config) { c.Slots = 2 }}
	if manager, err := DetectCgroups(CgroupsAuto, "bitzel-test"); err == nil {
		configs["cgroups"] = func(c *Config) { c.Slots, c.Cgroups = 2, manager }
	} else if os.Geteuid() == 0 {
		t.Fatalf("running as root on a host with cgroups, but none usable: %v", err)
	}
	for name, configure := range configs {
		t.Run(name, func(t *testing.T) {
			checkActionUserNamespaceLimits(t, budget, newEnv(t, configure))
		})
	}
}

func checkActionUserNamespaceLimits(t *testing.T, budget *UserNamespaceBudget, e *env) {
	out := e.run(&Spec{
		Mounts: []Mount{e.mount("", e.helperLayer())},
		Argv:   []string{"./helper"},
		Env:    []string{helperEnv + "=userns-limits"},
	})
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out.stdout), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("the action printed %q (stderr %q)", out.stdout, out.stderr)
		}
		got, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		host := int64(readIntFile(t, "/proc/sys/user/"+name))
		want := budget.PerAction.Sysctls[name]
		if got != want || got >= host {
			t.Errorf("%s is %d in the action's user namespace, want its share %d of the host's %d", name, got, want, host)
		}
		seen[name] = true
	}
	for _, name := range []string{"max_user_namespaces", "max_mnt_namespaces", "max_net_namespaces", "max_pid_namespaces", "max_inotify_instances"} {
		if !seen[name] {
			t.Errorf("the action's /proc/sys/user has no %s: %q", name, out.stdout)
		}
	}
}
