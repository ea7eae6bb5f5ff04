package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAnInitBinaryFromAnotherBuildIsRefused: an init binary left from
// an older build (which knows no protocol query and exits 2) or one
// speaking another protocol version is refused when the runner starts,
// naming the binary and the fix, instead of failing every action with
// "action has no exec root overlay" (seen when the Mount fields were
// renamed).
func TestAnInitBinaryFromAnotherBuildIsRefused(t *testing.T) {
	for name, script := range map[string]string{
		"older build":   "#!/bin/sh\necho \"bitzel-sandbox-init is started by bitzel-worker, not by hand\" >&2\nexit 2\n",
		"other version": "#!/bin/sh\necho 1\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			init := filepath.Join(dir, InitBinaryName)
			if err := os.WriteFile(init, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			runner, err := NewNamespaceRunner(Config{StateDir: filepath.Join(dir, "state"), InitPath: init})
			if err == nil {
				runner.Close()
				t.Fatal("the runner accepted an init binary of another build")
			}
			if !strings.Contains(err.Error(), init) || !strings.Contains(err.Error(), "another build") || !strings.Contains(err.Error(), "rebuild") {
				t.Errorf("error %q: want it to name the binary and how to fix it", err)
			}
		})
	}
}
