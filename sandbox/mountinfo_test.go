package sandbox

import (
	"strings"
	"testing"
)

// TestMountinfoHidesDataDirectory: the overlays' layer, upper and work
// directories live in the worker's data directory; the sandbox's
// mountinfo must not show where, with the mount API or mount(2), while
// df and mount still list the mounts.
func TestMountinfoHidesDataDirectory(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		name := map[bool]string{false: "fsopen", true: "legacy"}[legacy]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.LegacyOverlay = legacy })
			lower := e.layer("lower", map[string]string{"sub/file": "x"})
			o := e.run(&Spec{
				Mounts: []Mount{e.mount("", lower, e.dir("layers/second")), e.mount("sub", e.layer("sub", map[string]string{"f": "y"}))},
				Argv:   []string{"/bin/sh", "-c", "cat /proc/self/mountinfo /proc/self/mounts; df -a . sub >/dev/null && echo df ok"},
			})
			o.expectExit(t, 0)
			if strings.Contains(o.stdout, e.base) {
				t.Errorf("mountinfo in the sandbox shows the data directory %s:\n%s", e.base, o.stdout)
			}
			if strings.Count(o.stdout, " overlay ") < 4 || !strings.HasSuffix(o.stdout, "df ok\n") {
				t.Errorf("mount listings in the sandbox:\n%s\nstderr: %s", o.stdout, o.stderr)
			}
		})
	}
}
