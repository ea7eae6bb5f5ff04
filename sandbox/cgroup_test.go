package sandbox

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cgroupEnv is an env whose runner enforces limits with the cgroups
// this machine offers the test's user. As root here that is v1 (the
// host mounts v1 controllers; its v2 hierarchy has none); as an
// ordinary user there are none, and the runner falls back to
// RLIMIT_NPROC for the process limit.
func cgroupEnv(t *testing.T) (*env, CgroupManager) {
	name := "bitzel-test"
	manager, err := DetectCgroups(CgroupsAuto, name)
	if os.Geteuid() == 0 && err != nil {
		t.Fatalf("running as root on a host with cgroups, but none usable: %v", err)
	}
	// The runner owns the manager; newEnv's cleanup closes it.
	return newEnv(t, func(c *Config) { c.Cgroups = manager }), manager
}

func TestProcessLimitContainsForks(t *testing.T) {
	e, _ := cgroupEnv(t)
	o := e.run(&Spec{
		Mounts: []Mount{e.mount("", e.helperLayer())},
		Argv:   []string{"./helper"},
		Env:    []string{helperEnv + "=spawn"},
		Limits: Limits{MaxProcesses: 20},
	})
	o.expectExit(t, 0)
	started, err := strconv.Atoi(strings.TrimSpace(o.stdout))
	if err != nil {
		t.Fatalf("helper output %q", o.stdout)
	}
	if started >= 20 || started == 0 {
		t.Errorf("%d children started under a limit of 20 processes", started)
	}
}

func TestMemoryLimitReportsOOMKill(t *testing.T) {
	e, manager := cgroupEnv(t)
	if manager == nil {
		// Without cgroups nothing can enforce memory.max; what must
		// hold is that detection says why, so the worker logs it.
		_, err := DetectCgroups(CgroupsAuto, "bitzel-test")
		if err == nil || !strings.Contains(err.Error(), "v1: only root") {
			t.Errorf("DetectCgroups without cgroups: %v", err)
		}
		return
	}
	o := e.run(&Spec{
		Mounts: []Mount{e.mount("", e.helperLayer())},
		Argv:   []string{"./helper"},
		Env:    []string{helperEnv + "=hog"},
		Limits: Limits{MemoryBytes: 64 << 20},
	})
	if !o.OOMKilled || o.ExitCode == 0 {
		t.Errorf("a 512 MiB allocation under a 64 MiB limit: exit %d, OOM %v, stdout %q", o.ExitCode, o.OOMKilled, o.stdout)
	}
	// A run within the limit is not an OOM kill.
	o = e.shell(`echo small`)
	if o.OOMKilled {
		t.Error("a small action was reported as OOM-killed")
	}
}

// actionCgroups lists the action groups under the manager's subtree in
// each controller's hierarchy, and fails when one of them holds a
// process: a group is kept for the next action only once empty.
func actionCgroups(t *testing.T, v1 *cgroupV1) map[string][]string {
	t.Helper()
	groups := map[string][]string{}
	for controller, dir := range v1.dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, entry := range entries {
			if !entry.IsDir() {
				continue
			}
			groups[controller] = append(groups[controller], entry.Name())
			procs, err := os.ReadFile(filepath.Join(dir, entry.Name(), "cgroup.procs"))
			if err != nil || strings.TrimSpace(string(procs)) != "" {
				t.Errorf("%s: action cgroup %s kept with processes %q (%v)", controller, entry.Name(), procs, err)
			}
		}
	}
	return groups
}

// v1CgroupEnv is cgroupEnv for tests of the v1 groups' life, which only
// root has here: an ordinary user gets a nil manager (what it gets
// instead is TestMemoryLimitReportsOOMKill's business).
func v1CgroupEnv(t *testing.T) (*env, *cgroupV1) {
	e, manager := cgroupEnv(t)
	if manager == nil {
		if os.Geteuid() == 0 {
			t.Fatal("root without cgroups")
		}
		return e, nil
	}
	return e, manager.(*cgroupV1)
}

func TestCgroupsAreReusedEmptyAndRemovedAtClose(t *testing.T) {
	e, manager := v1CgroupEnv(t)
	if manager == nil {
		return
	}
	limits := Limits{MemoryBytes: 64 << 20, MaxProcesses: 50, CPUMillis: 500}
	v1 := manager
	for i := 0; i < 3; i++ {
		e.run(&Spec{Mounts: []Mount{e.mount("", e.dir("layers/empty"))}, Argv: []string{"/bin/true"}, Limits: limits}).expectExit(t, 0)
		// The group is handed back once PID 1 has finished
		// exiting, which Run does not wait for.
		e.runner.(*namespaceRunner).exiting.Wait()
		groups := actionCgroups(t, v1)
		for _, controller := range cgroupV1Controllers {
			if len(groups[controller]) != 1 {
				t.Errorf("after run %d: %s groups %v, want the one group every run reuses", i, controller, groups[controller])
			}
		}
	}
	if err := e.runner.Close(); err != nil {
		t.Fatal(err)
	}
	for _, dir := range v1.dirs {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s is still there after Close (%v)", dir, err)
		}
	}
}

// A reused group reports what its own action did: the event counters
// of the actions before it, which v1 cannot reset, do not count, and
// its limits are the new action's.
func TestReusedCgroupReportsOnlyItsOwnAction(t *testing.T) {
	e, manager := v1CgroupEnv(t)
	if manager == nil {
		return
	}
	exiting := &e.runner.(*namespaceRunner).exiting
	hog := func(limits Limits) outcome {
		o := e.run(&Spec{Mounts: []Mount{e.mount("", e.helperLayer())}, Argv: []string{"./helper"}, Env: []string{helperEnv + "=hog"}, Limits: limits})
		exiting.Wait()
		return o
	}
	spawn := func(limits Limits) outcome {
		o := e.run(&Spec{Mounts: []Mount{e.mount("", e.helperLayer())}, Argv: []string{"./helper"}, Env: []string{helperEnv + "=spawn"}, Limits: limits})
		exiting.Wait()
		return o
	}
	small := Limits{MemoryBytes: 64 << 20, MaxProcesses: 20}
	large := Limits{MemoryBytes: 1 << 30, MaxProcesses: 4096}
	if o := hog(large); o.OOMKilled || o.ExitCode != 0 {
		t.Fatalf("512 MiB under a 1 GiB limit: exit %d, OOM %v", o.ExitCode, o.OOMKilled)
	}
	if o := hog(small); !o.OOMKilled {
		t.Errorf("512 MiB under a 64 MiB limit in a reused group: exit %d, OOM %v: the limit was not rewritten", o.ExitCode, o.OOMKilled)
	}
	if o := hog(large); o.OOMKilled {
		t.Errorf("512 MiB under 1 GiB after an OOM kill in the same group: reported as OOM-killed")
	}
	if o := spawn(small); !o.PidsLimitHit {
		t.Errorf("spawn under a limit of 20 processes: PidsLimitHit %v", o.PidsLimitHit)
	}
	if o := spawn(large); o.PidsLimitHit {
		t.Errorf("spawn under 4096 after a run that hit 20 in the same group: reported as hitting the limit")
	}
	if groups := actionCgroups(t, manager); len(groups["memory"]) != 1 {
		t.Errorf("memory groups %v: want one, reused by every run", groups["memory"])
	}
}

// The host here has no delegated v2 hierarchy, so v2 is tested against a
// directory that stands in for cgroupfs.
func TestCgroupV2WritesLimitsAndReadsEvents(t *testing.T) {
	parent := t.TempDir()
	if _, err := NewCgroupV2Manager(parent); err == nil {
		t.Error("a directory without cgroup.controllers was accepted")
	}
	os.WriteFile(filepath.Join(parent, "cgroup.controllers"), []byte("cpuset cpu io memory\n"), 0o644)
	if _, err := NewCgroupV2Manager(parent); err == nil || !strings.Contains(err.Error(), "pids") {
		t.Errorf("missing pids controller: %v", err)
	}
	os.WriteFile(filepath.Join(parent, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644)
	manager, err := NewCgroupV2Manager(parent)
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control")); string(data) != "+memory +pids +cpu" {
		t.Errorf("subtree_control %q", data)
	}
	c, err := manager.Create("a1", Limits{MemoryBytes: 1 << 30, MaxProcesses: 64, CPUMillis: 1500})
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{"memory.max": "1073741824", "memory.swap.max": "0", "pids.max": "64", "cpu.max": "150000 100000"} {
		if data, _ := os.ReadFile(filepath.Join(parent, "a1", file)); string(data) != want {
			t.Errorf("%s = %q, want %q", file, data, want)
		}
	}
	if err := c.Join(4242); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(parent, "a1", "cgroup.procs")); string(data) != "4242" {
		t.Errorf("cgroup.procs %q", data)
	}
	if stats := c.Stats(); stats.OOMKilled {
		t.Error("OOM reported without memory.events")
	}
	os.WriteFile(filepath.Join(parent, "a1", "memory.events"), []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"), 0o644)
	os.WriteFile(filepath.Join(parent, "a1", "memory.peak"), []byte("123456\n"), 0o644)
	if stats := c.Stats(); !stats.OOMKilled || stats.MemoryPeakBytes != 123456 {
		t.Errorf("stats %+v", stats)
	}
	os.WriteFile(filepath.Join(parent, "a1", "memory.events"), []byte("oom 1\noom_kill 0\n"), 0o644)
	if stats := c.Stats(); stats.OOMKilled {
		t.Error("oom without oom_kill reported as a kill")
	}
}

func TestReadCgroupMountsAndOwnPaths(t *testing.T) {
	dir := t.TempDir()
	mountinfo := filepath.Join(dir, "mountinfo")
	os.WriteFile(mountinfo, []byte(`22 27 0:21 / /proc rw,relatime - proc proc rw
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw
`), 0o644)
	mounts, err := readCgroupMounts(mountinfo)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct", "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids", "cgroup2": "/sys/fs/cgroup/unified"}
	for k, v := range want {
		if mounts[k] != v {
			t.Errorf("mount of %s = %q, want %q", k, mounts[k], v)
		}
	}
	cgroup := filepath.Join(dir, "cgroup")
	os.WriteFile(cgroup, []byte("12:pids:/user.slice\n4:cpu,cpuacct:/a\n0::/user.slice/session-1.scope\n"), 0o644)
	own, err := readOwnCgroups(cgroup)
	if err != nil {
		t.Fatal(err)
	}
	if own["pids"] != "/user.slice" || own["cpu"] != "/a" || own["cpuacct"] != "/a" || own[""] != "/user.slice/session-1.scope" {
		t.Errorf("own cgroups %v", own)
	}
}

// Only an empty group is kept: one that still holds a process (which
// the pid namespace's teardown should make impossible) is removed.
func TestOnlyAnEmptyCgroupIsKeptForReuse(t *testing.T) {
	for _, procs := range []string{"4242\n", ""} {
		dir := t.TempDir()
		group := filepath.Join(dir, "action")
		os.Mkdir(group, 0o755)
		os.WriteFile(filepath.Join(group, "cgroup.procs"), []byte(procs), 0o644)
		m := &cgroupV1{dirs: map[string]string{"pids": dir}}
		c := &cgroupV1Action{dirs: map[string]string{"pids": group}, manager: m}
		c.Remove()
		if kept := len(m.idle.groups) == 1; kept != (procs == "") {
			t.Errorf("cgroup.procs %q: kept for reuse %v", procs, kept)
		}
	}
}

// An action cannot reach the group it shares with later actions: it
// tries to switch the OOM killer off for its memory group through the
// host's cgroupfs and through a cgroupfs of its own, and the next
// action in that group must still be OOM-killed at its limit (the
// limit itself is rewritten for every action; oom_control is not).
func TestAnActionCannotChangeTheCgroupTheNextOneReuses(t *testing.T) {
	e, manager := v1CgroupEnv(t)
	if manager == nil {
		return
	}
	small := Limits{MemoryBytes: 64 << 20, MaxProcesses: 20}
	attack := `p=$(grep memory /proc/self/cgroup | cut -d: -f3)
for f in /sys/fs/cgroup/memory$p/memory.oom_control /sys/fs/cgroup/memory/memory.oom_control; do
	echo 1 > "$f" 2>/dev/null && echo "wrote $f"
done
mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg 2>/dev/null && echo 1 > "/tmp/cg$p/memory.oom_control" && echo "wrote through a mount of its own"
true`
	o := e.run(&Spec{Mounts: []Mount{e.mount("", e.dir("layers/empty"))}, Argv: []string{"/bin/sh", "-c", attack}, Limits: small})
	o.expectExit(t, 0)
	if strings.Contains(o.stdout, "wrote") {
		t.Errorf("the action changed its cgroup: %s", o.stdout)
	}
	e.runner.(*namespaceRunner).exiting.Wait()
	// Bounded: with the OOM killer off the hog would wait at its limit
	// for ever.
	next := e.run(&Spec{Mounts: []Mount{e.mount("", e.helperLayer())}, Argv: []string{"./helper"}, Env: []string{helperEnv + "=hog"}, Limits: small, Timeout: 10 * time.Second})
	if !next.OOMKilled {
		t.Errorf("512 MiB under 64 MiB after an action tried to switch the OOM killer off: exit %d, OOM %v", next.ExitCode, next.OOMKilled)
	}
	e.runner.(*namespaceRunner).exiting.Wait()
	if groups := actionCgroups(t, manager); len(groups["memory"]) != 1 {
		t.Errorf("memory groups %v: the second action did not reuse the first one's", groups["memory"])
	}
}

// TestReadKeyedValue reads a key's value from "key value" lines as
// memory.oom_control and pids.events have them, and no other key's
// (oom_kill_disable is not oom_kill).
func TestReadKeyedValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "memory.oom_control")
	os.WriteFile(path, []byte("oom_kill_disable 0\nunder_oom 1\noom_kill 7\n"), 0o644)
	for key, want := range map[string]int64{"oom_kill": 7, "under_oom": 1, "oom_kill_disable": 0} {
		if got, ok := readKeyedValue(path, key); !ok || got != want {
			t.Errorf("%s: %d, %v; want %d", key, got, ok, want)
		}
	}
	if _, ok := readKeyedValue(path, "oom"); ok {
		t.Error("a key that is only a prefix was found")
	}
}
