package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExitCodeAndSignal(t *testing.T) {
	e := newEnv(t)
	e.shell(`exit 42`).expectExit(t, 42)
	o := e.shell(`kill -KILL $$`)
	if o.Signal != syscall.SIGKILL || o.ExitCode != 128+9 {
		t.Errorf("signal %v exit %d, want SIGKILL and 137", o.Signal, o.ExitCode)
	}
	o = e.shell(`kill -SEGV $$`)
	if o.Signal != syscall.SIGSEGV {
		t.Errorf("signal %v, want SIGSEGV", o.Signal)
	}
	if o.TimedOut || o.OOMKilled {
		t.Errorf("a plain signal was reported as timeout %v / OOM %v", o.TimedOut, o.OOMKilled)
	}
}

func TestCommandNotFoundIsExit127(t *testing.T) {
	e := newEnv(t)
	o := e.run(&Spec{Mounts: []Mount{e.mount("", e.dir("layers/empty"))}, Argv: []string{"no-such-compiler", "-c"}})
	o.expectExit(t, 127)
	if !o.NotFound || !strings.Contains(o.stderr, "no-such-compiler") {
		t.Errorf("not found %v, stderr %q", o.NotFound, o.stderr)
	}
}

func TestPathLookupUsesTheActionsPATH(t *testing.T) {
	e := newEnv(t)
	layer := e.layer("tools", map[string]string{"tools/hello": "#!/bin/sh\necho hello from tools\n"})
	os.Chmod(filepath.Join(layer, "tools/hello"), 0o755)
	o := e.run(&Spec{
		Mounts: []Mount{e.mount("", layer)},
		Argv:   []string{"hello"},
		Env:    []string{"PATH=tools:/usr/bin:/bin"},
	})
	o.expectExit(t, 0)
	if o.stdout != "hello from tools\n" {
		t.Errorf("stdout %q", o.stdout)
	}
}

func TestStdoutAndStderrCapturedAndCapped(t *testing.T) {
	e := newEnv(t)
	o := e.run(&Spec{
		Mounts: []Mount{e.mount("", e.dir("layers/empty"))},
		Argv:   []string{"/bin/sh", "-c", `echo to-out; echo to-err >&2`},
	})
	o.expectExit(t, 0)
	if o.stdout != "to-out\n" || o.stderr != "to-err\n" || o.StdoutTruncated || o.StderrTruncated {
		t.Errorf("stdout %q stderr %q truncated %v %v", o.stdout, o.stderr, o.StdoutTruncated, o.StderrTruncated)
	}
	// 64 MiB each way against a 1000-byte cap: the action must not
	// block on a full pipe, and the files must stop at the cap.
	o = e.run(&Spec{
		Mounts:           []Mount{e.mount("", e.dir("layers/empty"))},
		Argv:             []string{"/bin/sh", "-c", `head -c 67108864 /dev/zero; head -c 67108864 /dev/zero >&2; echo done >&2`},
		OutputLimitBytes: 1000,
	})
	o.expectExit(t, 0)
	if len(o.stdout) != 1000 || len(o.stderr) != 1000 || !o.StdoutTruncated || !o.StderrTruncated {
		t.Errorf("capped output: %d and %d bytes, truncated %v %v", len(o.stdout), len(o.stderr), o.StdoutTruncated, o.StderrTruncated)
	}
}

func TestTimeoutKillsDaemonisedGrandchildren(t *testing.T) {
	e := newEnv(t)
	marker := fmt.Sprintf("1000.%d", time.Now().UnixNano()%1000000)
	mountsBefore := hostMounts(t)
	start := time.Now()
	o := e.run(&Spec{
		Mounts:  []Mount{e.mount("", e.dir("layers/empty"))},
		Argv:    []string{"/bin/sh", "-c", `setsid sleep ` + marker + ` & (trap '' TERM HUP; exec sleep ` + marker + `) & echo started; sleep ` + marker},
		Timeout: 500 * time.Millisecond,
	})
	if !o.TimedOut {
		t.Fatalf("not reported as timed out: %+v", o.Result)
	}
	if elapsed := time.Since(start); elapsed > 30*time.Second {
		t.Errorf("Run returned after %v; the timeout did not stop it", elapsed)
	}
	if o.stdout != "started\n" {
		t.Errorf("partial stdout lost: %q", o.stdout)
	}
	if left := processesWithArgument(t, marker); len(left) > 0 {
		t.Errorf("processes outlived the timeout: %v", left)
	}
	if after := hostMounts(t); after != mountsBefore {
		t.Errorf("host mount table changed:\nbefore:\n%s\nafter:\n%s", mountsBefore, after)
	}
}

func TestBackgroundProcessesDieWithTheCommand(t *testing.T) {
	e := newEnv(t)
	marker := fmt.Sprintf("2000.%d", time.Now().UnixNano()%1000000)
	o := e.shell(`setsid sleep ` + marker + ` & nohup sleep ` + marker + ` >/dev/null 2>&1 & echo ok`)
	o.expectExit(t, 0)
	if left := processesWithArgument(t, marker); len(left) > 0 {
		t.Errorf("background processes outlived the action: %v", left)
	}
}

func TestCancelKillsTheAction(t *testing.T) {
	e := newEnv(t)
	marker := fmt.Sprintf("3000.%d", time.Now().UnixNano()%1000000)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(300 * time.Millisecond)
		cancel()
	}()
	_, err := e.runner.Run(ctx, &Spec{
		Mounts: []Mount{e.mount("", e.dir("layers/empty"))},
		Argv:   []string{"/bin/sh", "-c", `sleep ` + marker},
	})
	if err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Errorf("error %v, want cancellation", err)
	}
	if left := processesWithArgument(t, marker); len(left) > 0 {
		t.Errorf("processes outlived cancellation: %v", left)
	}
}

func TestNoMountsOrProcessesLeftAfterRun(t *testing.T) {
	for _, warm := range []int{0, 3} {
		t.Run(fmt.Sprintf("warm=%d", warm), func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.WarmSandboxes = warm })
			before := hostMounts(t)
			for i := 0; i < 5; i++ {
				e.shell(`mkdir -p a/b && echo x > a/b/c && cat /proc/mounts > /dev/null`).expectExit(t, 0)
			}
			if after := hostMounts(t); after != before {
				t.Errorf("host mount table changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			// Once the runs are released, every PID 1 left waits in
			// the pool for the next action (at most one per slot, or
			// the warm ones), and is gone after Close.
			r := e.runner.(*namespaceRunner)
			r.exiting.Wait()
			r.pool.mu.Lock()
			idle := len(r.pool.idle)
			r.pool.mu.Unlock()
			launchers, inits := sandboxProcesses(t)
			if len(launchers) != 1 || len(inits) != idle || idle > r.pool.maxIdle {
				t.Errorf("%d launchers and %d sandbox PID 1s, %d idle in a pool of at most %d", len(launchers), len(inits), idle, r.pool.maxIdle)
			}
			if len(inits) == 0 {
				t.Error("no idle sandbox found: the check cannot see them")
			}
			e.runner.Close()
			if launchers, inits := sandboxProcesses(t); len(launchers)+len(inits) > 0 {
				t.Errorf("left after Close: launchers %v, sandboxes %v", launchers, inits)
			}
		})
	}
}

func TestBadSpecsAreClearErrors(t *testing.T) {
	e := newEnv(t)
	empty := e.dir("layers/empty")
	missing := filepath.Join(e.base, "layers/not-there")
	cases := []struct {
		name string
		spec *Spec
		want string
	}{
		{"missing layer", &Spec{Mounts: []Mount{e.mount("", missing)}, Argv: []string{"/bin/true"}}, missing},
		{"relative layer", &Spec{Mounts: []Mount{e.mount("", "layers/empty")}, Argv: []string{"/bin/true"}}, "not an absolute path"},
		{"escaping working directory", &Spec{Mounts: []Mount{e.mount("", empty)}, Argv: []string{"/bin/true"}, WorkingDirectory: "../.."}, "working directory"},
		{"escaping mount", &Spec{Mounts: []Mount{e.mount("", empty), e.mount("../x", empty)}, Argv: []string{"/bin/true"}}, "mount path"},
		{"no command", &Spec{Mounts: []Mount{e.mount("", empty)}}, "no command"},
		{"no layers", &Spec{Mounts: []Mount{e.mount("")}, Argv: []string{"/bin/true"}}, "no layers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.tryRun(c.spec)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestMissingWorkingDirectoryIsReported(t *testing.T) {
	e := newEnv(t)
	_, err := e.tryRun(&Spec{Mounts: []Mount{e.mount("", e.dir("layers/empty"))}, Argv: []string{"/bin/true"}, WorkingDirectory: "does/not/exist"})
	if err == nil || !strings.Contains(err.Error(), "does/not/exist") {
		t.Errorf("error %v, want one naming the working directory", err)
	}
}

func TestTmpIsPrivateAndLimited(t *testing.T) {
	e := newEnv(t)
	o := e.run(&Spec{
		Mounts: []Mount{e.mount("", e.dir("layers/empty"))},
		Argv:   []string{"/bin/sh", "-c", `head -c 4194304 /dev/zero > /tmp/big 2>/dev/null; echo rc=$?; rm /tmp/big; echo private > /tmp/mine`},
		Limits: Limits{TmpSizeBytes: 1 << 20},
	})
	o.expectExit(t, 0)
	if !strings.Contains(o.stdout, "rc=1") {
		t.Errorf("filling a 1 MiB /tmp with 4 MiB succeeded: %s", o.stdout)
	}
	if _, err := os.Stat("/tmp/mine"); err == nil {
		t.Error("the action wrote into the host's /tmp")
	}
}

// /dev/shm is the sandbox's own tmpfs: its size is the runner's
// setting (a container's --shm-size does not reach it), 1 GiB unless
// configured, for the warm (prepared) and the hermetic path alike.
func TestShmSizeIsConfigurable(t *testing.T) {
	for _, c := range []struct {
		name     string
		config   func(*Config)
		wantSize string
	}{
		{"default", func(*Config) {}, "size=1048576k"},
		{"8 MiB", func(c *Config) { c.ShmSizeBytes = 8 << 20 }, "size=8192k"},
	} {
		e := newEnv(t, c.config)
		o := e.shell(`grep ' /dev/shm ' /proc/mounts`)
		o.expectExit(t, 0)
		if !strings.Contains(o.stdout, c.wantSize) {
			t.Errorf("%s: /dev/shm is %q, want %s", c.name, o.stdout, c.wantSize)
		}
	}
}

func TestExecRootPathMayNotOverlapSandboxMounts(t *testing.T) {
	for _, p := range []string{"/tmp/build", "/usr/src/x", "/proc", "/", "relative"} {
		_, err := NewNamespaceRunner(Config{StateDir: t.TempDir(), ExecRootPath: p})
		if err == nil {
			t.Errorf("exec root path %q accepted", p)
		}
	}
}

// An action that signals PID 1 with everything that ends a process by
// default must not take the sandbox down: PID 1 still reports the
// command's own exit. And PID 1's immunity must not leak into the
// command: a process of the action still dies of SIGTERM.
func TestSignalsToPIDOneFromInside(t *testing.T) {
	e := newEnv(t)
	// HUP INT QUIT ABRT USR1 USR2 PIPE ALRM TERM STKFLT XCPU XFSZ
	// VTALRM IO PWR SYS, by number: dash knows few of their names.
	o := e.shell(`for s in 1 2 3 6 10 12 13 14 15 16 24 25 26 29 30 31; do kill -$s 1 || exit 99; done
sleep 0.2
sh -c 'kill -TERM $$; echo not-killed'; echo "inner exit $?"
exit 7`)
	o.expectExit(t, 7)
	if !strings.Contains(o.stdout, "inner exit 143") || strings.Contains(o.stdout, "not-killed") {
		t.Errorf("a process of the action survived SIGTERM (an ignored disposition leaked from PID 1): stdout %q", o.stdout)
	}
}

// TestAnyPathWithTheDefaultDataRoot: without DataRoots a sandbox binds
// the whole host tree and serves layers anywhere; with them, a layer
// outside is refused up front, naming the path and the roots.
func TestAnyPathWithTheDefaultDataRoot(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DataRoots = nil })
	e.shell(`echo ok`, e.layer("anywhere", map[string]string{"f": "x"})).expectExit(t, 0)
	outside := t.TempDir()
	os.Chmod(outside, 0o755)
	restricted := newEnv(t)
	_, err := restricted.tryRun(&Spec{Mounts: []Mount{restricted.mount("", outside)}, Argv: []string{"/bin/true"}})
	if err == nil || !strings.Contains(err.Error(), outside) || !strings.Contains(err.Error(), "data directories") {
		t.Errorf("a layer outside the data roots: %v", err)
	}
}
