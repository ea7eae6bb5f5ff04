package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// cgroupV2 manages action cgroups under a delegated cgroup v2
// directory, whose cgroup.subtree_control already enables (or can
// enable) the memory, pids and cpu controllers.
type cgroupV2 struct {
	parent string
	// removeParent: the parent was created for this manager.
	removeParent bool
	// leftovers counts the groups of dead workers removed at start.
	leftovers int
}

// NewCgroupV2Manager uses parent, a cgroup v2 directory the worker may
// write (a systemd Delegate=yes unit's cgroup, or a directory prepared
// for it). Its own processes must already live elsewhere: cgroup v2
// forbids processes in a group whose controllers are delegated.
func NewCgroupV2Manager(parent string) (CgroupManager, error) {
	controllers, err := os.ReadFile(filepath.Join(parent, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("cgroup v2 %s: %w", parent, err)
	}
	var missing []string
	for _, want := range []string{"memory", "pids", "cpu"} {
		if !strings.Contains(" "+strings.TrimSpace(string(controllers))+" ", " "+want+" ") {
			missing = append(missing, want)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("cgroup v2 %s: controllers %v are not available", parent, missing)
	}
	if err := writeCgroupFile(parent, "cgroup.subtree_control", "+memory +pids +cpu"); err != nil {
		return nil, fmt.Errorf("cgroup v2: enable controllers: %w", err)
	}
	idle := filepath.Join(parent, idleCgroupV2)
	if err := os.Mkdir(idle, 0o755); err != nil && !os.IsExist(err) {
		return nil, fmt.Errorf("cgroup v2: %w", err)
	}
	return &cgroupV2{parent: parent}, nil
}

// idleCgroupV2 is the leaf below the manager's parent where PID 1s wait
// between actions: cgroup v2 allows no process in the parent itself,
// whose controllers are delegated to the action groups.
const idleCgroupV2 = "idle-sandboxes"

func (m *cgroupV2) String() string { return "cgroup v2 at " + m.parent }

func (m *cgroupV2) Close() error {
	if !m.removeParent {
		return removeCgroup(filepath.Join(m.parent, idleCgroupV2))
	}
	return removeCgroupTree(m.parent)
}

func (m *cgroupV2) Create(name string, limits Limits) (ActionCgroup, error) {
	dir := filepath.Join(m.parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup v2: %w", err)
	}
	c := &cgroupV2Action{dir: dir, idle: filepath.Join(m.parent, idleCgroupV2)}
	if err := c.setLimits(limits); err != nil {
		c.Remove()
		return nil, err
	}
	return c, nil
}

type cgroupV2Action struct {
	dir, idle string
}

func (c *cgroupV2Action) setLimits(limits Limits) error {
	if limits.MemoryBytes > 0 {
		if err := writeCgroupFile(c.dir, "memory.max", fmt.Sprint(limits.MemoryBytes)); err != nil {
			return err
		}
		// Without this an action past its limit swaps instead of
		// being killed, and runs for ever.
		if err := writeCgroupFile(c.dir, "memory.swap.max", "0"); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if limits.MaxProcesses > 0 {
		if err := writeCgroupFile(c.dir, "pids.max", fmt.Sprint(limits.MaxProcesses)); err != nil {
			return err
		}
	}
	if limits.CPUMillis > 0 {
		const period = 100000
		if err := writeCgroupFile(c.dir, "cpu.max", fmt.Sprintf("%d %d", limits.CPUMillis*period/1000, period)); err != nil {
			return err
		}
	}
	return nil
}

func (c *cgroupV2Action) Join(pid int) error {
	return writeCgroupFile(c.dir, "cgroup.procs", fmt.Sprint(pid))
}

func (c *cgroupV2Action) Leave(pid int) error {
	return writeCgroupFile(c.idle, "cgroup.procs", fmt.Sprint(pid))
}

func (c *cgroupV2Action) Stats() CgroupStats {
	var stats CgroupStats
	if n, ok := readKeyedValue(filepath.Join(c.dir, "memory.events"), "oom_kill"); ok && n > 0 {
		stats.OOMKilled = true
	}
	if n, ok := readKeyedValue(filepath.Join(c.dir, "pids.events"), "max"); ok && n > 0 {
		stats.PidsLimitHit = true
	}
	if n, ok := readInt(filepath.Join(c.dir, "memory.peak")); ok {
		stats.MemoryPeakBytes = n
	}
	return stats
}

func (c *cgroupV2Action) Remove() error {
	// cgroup.kill ends anything that escaped the pid namespace's
	// teardown (nothing should have).
	writeCgroupFile(c.dir, "cgroup.kill", "1")
	return removeCgroup(c.dir)
}
