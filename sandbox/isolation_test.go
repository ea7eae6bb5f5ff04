package sandbox

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCommandIsChildOfPID1(t *testing.T) {
	e := newEnv(t)
	o := e.shell(`echo ppid=$PPID; cat /proc/1/comm; ls /proc | grep -c '^[0-9]'`)
	o.expectExit(t, 0)
	got := lines(o.stdout)
	if got[0] != "ppid=1" {
		t.Errorf("command's parent is %s, want PID 1 of its own namespace", got[0])
	}
	if !strings.Contains(got[1], "bitzel") && !strings.Contains(got[1], "exe") && !strings.Contains(got[1], ".test") {
		t.Errorf("PID 1 is %q, want the sandbox init", got[1])
	}
	// The sandbox's /proc shows its own processes only (init, sh, ls,
	// grep), not the host's hundreds.
	if got[2] > "9" || len(got[2]) > 1 {
		t.Errorf("sandbox /proc lists %s processes; the pid namespace leaks", got[2])
	}
}

func TestOnlyLoopbackIsUp(t *testing.T) {
	e := newEnv(t)
	helper := e.helperLayer()
	o := e.run(&Spec{
		Mounts: []Mount{e.mount("", helper)},
		Argv:   []string{"./helper"},
		Env:    []string{helperEnv + "=interfaces"},
	})
	o.expectExit(t, 0)
	if strings.TrimSpace(o.stdout) != "lo true" {
		t.Errorf("interfaces in the sandbox:\n%s\nwant only lo, up", o.stdout)
	}
	o = e.run(&Spec{
		Mounts: []Mount{e.mount("", helper)},
		Argv:   []string{"./helper"},
		Env:    []string{helperEnv + "=loopback"},
	})
	o.expectExit(t, 0)
	if strings.TrimSpace(o.stdout) != "pong" {
		t.Errorf("loopback inside the sandbox: %q", o.stdout)
	}
}

func TestCannotReachHostLoopback(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := listener.Accept(); err == nil {
			c.Close()
			accepted <- struct{}{}
		}
	}()
	e := newEnv(t)
	o := e.run(&Spec{
		Mounts: []Mount{e.mount("", e.helperLayer())},
		Argv:   []string{"./helper", listener.Addr().String()},
		Env:    []string{helperEnv + "=connect"},
	})
	o.expectExit(t, 0)
	if !strings.HasPrefix(o.stdout, "refused") {
		t.Errorf("action reached the host's %s: %s", listener.Addr(), o.stdout)
	}
	select {
	case <-accepted:
		t.Error("host listener accepted a connection from the sandbox")
	default:
	}
}

func TestHostname(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Hostname = "bitzel-test" })
	o := e.shell(`cat /proc/sys/kernel/hostname`)
	o.expectExit(t, 0)
	if got := strings.TrimSpace(o.stdout); got != "bitzel-test" {
		t.Errorf("hostname %q, want bitzel-test", got)
	}
	if host, _ := os.Hostname(); host == "bitzel-test" {
		t.Error("the sandbox changed the host's hostname")
	}
}

func TestHostPrivatePathsAreInvisible(t *testing.T) {
	e := newEnv(t)
	// The worker's own state (the data dir in production) must not be
	// reachable either.
	o := e.shell(`for p in /root /home /var /srv /mnt ` + e.base + `; do test -e $p && echo visible: $p; done; ls /tmp | wc -l; test -x /usr/bin/env && echo userland`)
	o.expectExit(t, 0)
	got := lines(o.stdout)
	for _, line := range got {
		if strings.HasPrefix(line, "visible") {
			t.Error(line)
		}
	}
	if len(got) < 2 || got[len(got)-2] != "0" {
		t.Errorf("the sandbox's /tmp is not empty: %v", got)
	}
	if got[len(got)-1] != "userland" {
		t.Errorf("the host userland is not visible: %v", got)
	}
}

func TestHostUserlandIsReadOnly(t *testing.T) {
	e := newEnv(t)
	o := e.shell(`touch /usr/bitzel-was-here 2>&1; touch /etc/bitzel-was-here 2>&1; touch /bitzel-was-here 2>&1; mount -t tmpfs none /tmp 2>&1; true`)
	o.expectExit(t, 0)
	for _, p := range []string{"/usr/bitzel-was-here", "/etc/bitzel-was-here"} {
		if _, err := os.Stat(p); err == nil {
			os.Remove(p)
			t.Errorf("the action created %s on the host", p)
		}
	}
	if n := strings.Count(o.stdout, "Read-only file system") + strings.Count(o.stdout, "Permission denied"); n < 3 {
		t.Errorf("writes outside the exec root were not refused:\n%s", o.stdout)
	}
	if !strings.Contains(o.stdout, "mount") {
		t.Errorf("mount was not refused:\n%s", o.stdout)
	}
}

func TestActionIsRootAndCanChown(t *testing.T) {
	e := newEnv(t)
	o := e.shell(`id -u; id -g; touch f && chown 0:0 f && chmod 4755 f && stat -c '%u:%g %a' f; install -o root -g root -m 4755 f g && stat -c '%u:%g %a' g`)
	o.expectExit(t, 0)
	want := []string{"0", "0", "0:0 4755", "0:0 4755"}
	if got := lines(o.stdout); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q (stderr %s)", got, want, o.stderr)
	}
}

func TestEnvironmentIsExactlyTheSpec(t *testing.T) {
	os.Setenv("BITZEL_HOST_SECRET", "leak")
	defer os.Unsetenv("BITZEL_HOST_SECRET")
	e := newEnv(t)
	o := e.run(&Spec{
		Mounts: []Mount{e.mount("", e.dir("layers/empty"))},
		Argv:   []string{"/usr/bin/env"},
		Env:    []string{"A=1", "B=two words"},
	})
	o.expectExit(t, 0)
	if got := strings.TrimSpace(o.stdout); got != "A=1\nB=two words" {
		t.Errorf("environment:\n%s", got)
	}
}

// Each sandbox has a user namespace of its own, a child of the
// launcher's (child/launcher.go), with or without cgroups. Either way a sandbox must not see, signal or reach another running
// at the same time: A parks a process with a marker in its command
// line and waits; B looks for it in /proc, kills everything it can
// see, and listens on the port A's loopback would use.
func TestConcurrentSandboxesStayApart(t *testing.T) {
	e, manager := cgroupEnv(t)
	marker := "4.2424"
	aMount := e.mount("", e.dir("layers/empty"))
	var a outcome
	done := make(chan struct{})
	go func() {
		defer close(done)
		a = e.run(&Spec{Mounts: []Mount{aMount}, Argv: []string{"/bin/sh", "-c",
			`readlink /proc/self/ns/user; readlink /proc/self/ns/user > ns.tmp && mv ns.tmp ns; sleep ` + marker + `; echo survived`}})
	}()
	var aNamespace []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if aNamespace, err = os.ReadFile(filepath.Join(aMount.UpperDir, "ns")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sandbox A did not start within 10 s")
		}
	}
	// B's own command lines must not contain the marker: it is
	// assembled in a variable and matched by the shell itself.
	b := e.shell(`readlink /proc/self/ns/user
m=` + marker[:3] + `; m=${m}` + marker[3:] + `; n=0
for p in /proc/[0-9]*; do
	c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null)
	case "$c" in *"sleep $m"*) n=$((n+1));; esac
done
echo $n
kill -9 -1 2>/dev/null; echo killed`)
	<-done
	a.expectExit(t, 0)
	if !strings.Contains(a.stdout, "survived") {
		t.Errorf("sandbox A did not finish its sleep (killed from B?): stdout %q", a.stdout)
	}
	got := lines(b.stdout)
	if len(got) < 3 || got[1] != "0" || got[2] != "killed" {
		t.Errorf("sandbox B saw A's process or did not run to the end: %q", b.stdout)
	}
	// Each sandbox (each slot's PID 1) has a user namespace of its
	// own, with cgroups too (userns_budget.go says why).
	shared := strings.TrimSpace(string(aNamespace)) == got[0]
	if want := false; shared != want {
		t.Errorf("sandboxes share a user namespace: %v, want %v (cgroups: %v)", shared, want, manager)
	}
}

// The command runs with Docker's default capability set (no
// CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_NET_ADMIN, ...) and no_new_privs.
// Both are per-thread state in PID 1, so many runs: a command forked
// from a thread that did not drop them would show up in some.
func TestCommandCapabilitiesAndNoNewPrivs(t *testing.T) {
	// CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
	// NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
	const docker = "00000000a80425fb"
	want := "CapEff:\t" + docker + "\nCapBnd:\t" + docker + "\nNoNewPrivs:\t1\n"
	// PID 1 runs from a package initialiser when the worker (here the
	// test binary) re-executes itself, from main() in the dedicated
	// init binary: the runtime treats the two differently.
	for _, dedicated := range []bool{false, true} {
		e := newEnv(t, func(c *Config) {
			if dedicated {
				c.InitPath = initBinary(t, t.TempDir())
			}
		})
		for i := 0; i < 40; i++ {
			o := e.shell(`grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status; mount -t tmpfs none /tmp 2>/dev/null && echo mounted; true`)
			o.expectExit(t, 0)
			if o.stdout != want {
				t.Fatalf("init binary %v, run %d: the command's privileges:\n%s\nwant:\n%s\nstderr: %s", dedicated, i, o.stdout, want, o.stderr)
			}
		}
	}
}
