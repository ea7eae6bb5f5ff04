package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// workerCgroups lists the cgroup directories of a serve process in the
// v1 hierarchies it uses: its own group in each, and the action groups
// below (the pids limit is on by default, so every action has one).
func workerCgroups(t *testing.T, pid int) []string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.SplitN(line, ":", 3)
		if len(fields) != 3 || (fields[1] != "memory" && fields[1] != "pids" && fields[1] != "cpu,cpuacct" && fields[1] != "cpu") {
			continue
		}
		controller := fields[1]
		if controller == "cpu,cpuacct" {
			controller = "cpu"
		}
		dir := filepath.Join("/sys/fs/cgroup", controller, fields[2], fmt.Sprintf("bitzel-worker-%d", pid))
		actions, _ := filepath.Glob(filepath.Join(dir, "action-*"))
		dirs = append(append(dirs, actions...), dir)
	}
	return dirs
}

// TestRestartAfterKillRemovesWhatThePredecessorLeft: serve is killed
// with SIGKILL mid-action; its sandboxes die with it, but its cgroups
// and build directory (and, as root, a mount below its sandbox state
// directory) stay. The next serve on the same data directory removes
// them and says so in one log line.
// Long on purpose: one scenario whose steps build on each other (each
// needs the state the previous left), read top to bottom.
func TestRestartAfterKillRemovesWhatThePredecessorLeft(t *testing.T) {
	s := startServer(t)
	c := s.client()
	a := c.newAction(action{args: sh(`sleep 600`)})
	stream := c.startExecute(context.Background(), a, false)
	waitForExecuting(t, stream)
	root := os.Geteuid() == 0
	var cgroups []string
	if root {
		waitUntil(t, "the action's cgroup", func() bool { return len(workerCgroups(t, s.cmd.Process.Pid)) > 3 })
		cgroups = workerCgroups(t, s.cmd.Process.Pid)
	}
	// The build directory is made before the action runs, but the
	// test must not depend on when: without it the precondition
	// below fails (it raced).
	waitUntil(t, "the action's build directory", func() bool { return countEntries(filepath.Join(s.dataDir, "build")) > 0 })
	sandboxes := sandboxProcesses(t, s.cmd.Process.Pid)
	s.cmd.Process.Kill()
	<-s.exited
	waitUntil(t, "the sandboxes to die with the server", func() bool {
		for _, pid := range sandboxes {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				return false
			}
		}
		return true
	})
	for _, dir := range cgroups {
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("precondition: cgroup %s should outlive a SIGKILLed worker: %v", dir, err)
		}
	}
	if countEntries(filepath.Join(s.dataDir, "build")) == 0 {
		t.Fatal("precondition: the killed action's build directory should remain")
	}
	leftoverMount := filepath.Join(s.dataDir, "sandbox", "leftover-mount")
	if root {
		// Nothing the worker mounts today lives in the host's
		// namespace; a mount there stands for one.
		os.MkdirAll(leftoverMount, 0o755)
		if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs", leftoverMount).CombinedOutput(); err != nil {
			t.Fatalf("mount: %v %s", err, out)
		}
		// Should the worker fail to, the test does not leak it.
		t.Cleanup(func() { syscall.Unmount(leftoverMount, syscall.MNT_DETACH) })
	}

	// A short grace period: the clean stop below cancels an action
	// in flight rather than waiting for it.
	restarted := startServerIn(t, s.dataDir, "--shutdown-grace", "100ms")
	defer restarted.stop()
	for _, dir := range cgroups {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("cgroup %s of the killed worker is still there after the restart (%v)", dir, err)
		}
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), leftoverMount) {
		t.Error("the leftover mount is still there after the restart")
	}
	lines := regexp.MustCompile(`(?m)^.*removed what an earlier run left behind: (\d+) cgroups, (\d+) mounts, (\d+) build directories$`).FindAllStringSubmatch(restarted.logs(), -1)
	if len(lines) != 1 {
		t.Fatalf("want one log line saying what was removed, got %d:\n%s", len(lines), restarted.logs())
	}
	// Cgroups are per host, not per data directory: a restart also
	// removes those of any other dead worker (other tests kill serve
	// too), so the count is at least the predecessor's.
	got := lines[0][1:]
	wantMounts := "0"
	if root {
		wantMounts = "1"
	}
	if n, _ := strconv.Atoi(got[0]); n < len(cgroups) || got[1] != wantMounts || got[2] != "1" {
		t.Errorf("log line %q: want at least %d cgroups, %s mounts, 1 build directory", lines[0][0], len(cgroups), wantMounts)
	}
	// A clean stop leaves nothing of its own, even with an action in
	// flight: no cgroup of the stopped worker (its own nor the
	// action's), and a restart finds no mount or build directory (it
	// may still remove other dead workers' cgroups).
	rc := restarted.client()
	inFlight := rc.startExecute(context.Background(), rc.newAction(action{args: sh(`sleep 601`)}), false)
	waitForExecuting(t, inFlight)
	var ownCgroups []string
	if root {
		waitUntil(t, "the action's cgroup", func() bool { return len(workerCgroups(t, restarted.cmd.Process.Pid)) > 3 })
		ownCgroups = workerCgroups(t, restarted.cmd.Process.Pid)
	}
	restarted.stop()
	for _, dir := range ownCgroups {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("cgroup %s of a cleanly stopped worker is still there (%v)", dir, err)
		}
	}
	again := startServerIn(t, s.dataDir)
	defer again.stop()
	for _, m := range regexp.MustCompile(`(?m)left behind: \d+ cgroups, (\d+) mounts, (\d+) build directories$`).FindAllStringSubmatch(again.logs(), -1) {
		if m[1] != "0" || m[2] != "0" {
			t.Errorf("a restart after a clean stop reported leftovers of its own:\n%s", again.logs())
		}
	}
}

// countEntries is the number of entries in dir.
func countEntries(dir string) int {
	entries, _ := os.ReadDir(dir)
	return len(entries)
}
