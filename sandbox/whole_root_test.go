package sandbox

import (
	"strings"
	"testing"
)

// TestWholeRootPerAction: Spec.ExecRootIsRoot makes one action's exec
// root its whole root on a runner that binds the host's userland for
// the others (and keeps warm sandboxes prepared that way).
func TestWholeRootPerAction(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.WarmSandboxes = 1 })
	userland := busyboxLayer(t, e)
	o := e.run(&Spec{
		Mounts:         []Mount{e.mount("", userland)},
		Argv:           []string{"/bin/sh", "-c", `test -e /usr && echo host-usr-visible; echo whole > /out.txt; cat /out.txt`},
		ExecRootIsRoot: true,
	})
	o.expectExit(t, 0)
	if strings.Contains(o.stdout, "host-usr-visible") || !strings.Contains(o.stdout, "whole") {
		t.Errorf("whole-root action:\n%s\n%s", o.stdout, o.stderr)
	}
	// The next action, on the same runner, has the host's userland
	// again and its exec root where the runner puts it.
	o = e.shell(`test -d /usr && echo host-usr-visible; pwd`)
	o.expectExit(t, 0)
	if !strings.Contains(o.stdout, "host-usr-visible") || !strings.Contains(o.stdout, DefaultExecRootPath) {
		t.Errorf("ordinary action after a whole-root one:\n%s\n%s", o.stdout, o.stderr)
	}
}
