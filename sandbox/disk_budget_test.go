package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitzel/bitzel-worker/internal/testsupport"
)

// TestDiskBudgetHoldsTheUpperDirectories: with a disk budget, what the
// action writes to its overlays (the exec root and one below it) goes
// to a tmpfs of that size, a write past it fails inside the action, and
// the worker reads what was written through the descriptor it gets,
// after the sandbox is gone. Directories the worker prepared in the
// upper directories are there for the action; the host's upper
// directories receive nothing.
func TestDiskBudgetHoldsTheUpperDirectories(t *testing.T) {
	for _, hermetic := range []bool{false, true} {
		name := "host userland"
		if hermetic {
			name = "exec root as root file system"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.ExecRootIsRoot = hermetic })
			layer := e.dir("layers/empty")
			root := "/bitzel/execroot"
			if hermetic {
				data := testsupport.StaticBusyboxData(t)
				bin := e.dir("layers/userland/bin")
				if err := os.WriteFile(filepath.Join(bin, "busybox"), data, 0o755); err != nil {
					t.Fatal(err)
				}
				for _, applet := range []string{"sh", "head", "echo", "test"} {
					os.Symlink("busybox", filepath.Join(bin, applet))
				}
				layer, root = filepath.Dir(bin), ""
			}
			execRoot, sub := e.mount("", layer), e.mount("sub", e.dir("layers/sub"))
			if err := os.MkdirAll(filepath.Join(execRoot.UpperDir, "pre/made"), 0o750); err != nil {
				t.Fatal(err)
			}
			spec := &Spec{
				Mounts: []Mount{execRoot, sub},
				Argv: []string{"/bin/sh", "-c", `cd ` + root + `/ && test -d pre/made && echo prepared
					echo top > pre/made/top.txt && echo below > sub/below.txt && echo wrote
					head -c 8388608 /dev/zero > sub/big || echo full`},
				Env:    []string{"PATH=/bin:/usr/bin"},
				Limits: Limits{DiskBytes: 4 << 20},
			}
			o := e.run(spec)
			o.expectExit(t, 0)
			if o.DiskBudget == nil {
				t.Fatal("no disk budget descriptor in the result")
			}
			defer o.DiskBudget.Close()
			if got := strings.Fields(o.stdout); strings.Join(got, " ") != "prepared wrote full" {
				t.Errorf("stdout %q stderr %q", o.stdout, o.stderr)
			}
			if !o.DiskBudgetExceeded {
				t.Error("the budget was filled but not reported")
			}
			uppers := o.UpperDirs(spec)
			for file, want := range map[string]string{filepath.Join(uppers[0], "pre/made/top.txt"): "top\n", filepath.Join(uppers[1], "below.txt"): "below\n"} {
				if data, err := os.ReadFile(file); err != nil || string(data) != want {
					t.Errorf("%s: %q %v", file, data, err)
				}
			}
			if info, err := os.Stat(filepath.Join(uppers[0], "pre/made")); err != nil || info.Mode().Perm() != 0o750 {
				t.Errorf("prepared directory in the budget: %v %v", info, err)
			}
			for _, host := range []string{filepath.Join(execRoot.UpperDir, "pre/made/top.txt"), filepath.Join(sub.UpperDir, "below.txt")} {
				if _, err := os.Stat(host); !os.IsNotExist(err) {
					t.Errorf("%s written on the host (%v)", host, err)
				}
			}
		})
	}
}
