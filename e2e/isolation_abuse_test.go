package e2e

import (
	"strings"
	"testing"
)

// TestActionIsolationThroughServe checks, through `serve` with its
// default settings, what the sandbox package tests check of the
// runner: the seccomp filter is on (no nested user namespace, no mount,
// a compiler still works) and the sandbox's mount table does not show
// the data directory. --seccomp relaxes the filter.
func TestActionIsolationThroughServe(t *testing.T) {
	s := startServer(t)
	c := s.client()
	result := c.run(action{args: sh(`
		export PATH=/usr/bin:/bin
		unshare -r true 2>/dev/null && echo "unshare -r works"
		unshare -rm mount -t tmpfs none /tmp 2>/dev/null && echo "nested mount works"
		cd /tmp && echo 'int main(void){return 0;}' > m.c && gcc -o m m.c 2>&1 && ./m && echo compiled
		cat /proc/self/mountinfo`)})
	out := string(c.read(result.StdoutDigest))
	if strings.Contains(out, "works") || !strings.Contains(out, "compiled") {
		t.Errorf("in an action under the default filter:\n%s", out)
	}
	if strings.Contains(out, s.dataDir) {
		t.Errorf("the action's mountinfo shows the data directory %s:\n%s", s.dataDir, out)
	}

	relaxed := startServer(t, "--seccomp", "allow-user-namespaces")
	c = relaxed.client()
	result = c.run(action{args: sh(`PATH=/usr/bin:/bin unshare -rm sh -c 'mount -t tmpfs none /tmp && echo mounted'`)})
	if out := string(c.read(result.StdoutDigest)); out != "mounted\n" {
		t.Errorf("under --seccomp=allow-user-namespaces: %q", out)
	}
}
