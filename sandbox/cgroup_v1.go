package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupV1 manages action cgroups in the legacy hierarchies, one per
// controller (memory, pids, cpu), under a subtree the worker creates
// and removes itself.
type cgroupV1 struct {
	// dirs maps a controller to the worker's subtree in its hierarchy.
	dirs map[string]string
	// leftovers counts the groups of dead workers removed at start.
	leftovers int
	// idle holds emptied action groups for the next actions
	// (cgroup_v1_recycle.go).
	idle idleCgroupsV1
}

var cgroupV1Controllers = []string{"memory", "pids", "cpu"}

// NewCgroupV1Manager creates the subtree "<name>-<pid>" in the
// hierarchy of each controller (mounts maps a controller to where its
// hierarchy is mounted), below the worker's own cgroup there
// (ownPaths). The pid keeps workers sharing a host (or a test run) out
// of each other's groups; subtrees of workers that died are removed.
func NewCgroupV1Manager(mounts, ownPaths map[string]string, name string) (CgroupManager, error) {
	m := &cgroupV1{dirs: map[string]string{}}
	for _, controller := range cgroupV1Controllers {
		if mounts[controller] == "" {
			return nil, fmt.Errorf("cgroup v1: no %s hierarchy is mounted", controller)
		}
		parent := filepath.Join(mounts[controller], ownPaths[controller])
		m.leftovers += removeDeadWorkerGroups(parent, name)
		dir := filepath.Join(parent, fmt.Sprintf("%s-%d", name, os.Getpid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			m.Close()
			return nil, fmt.Errorf("cgroup v1 %s: %w", controller, err)
		}
		m.dirs[controller] = dir
	}
	return m, nil
}

// removeDeadWorkerGroups removes the subtrees "<name>-<pid>" of workers
// that died with actions in flight, and counts the groups removed.
func removeDeadWorkerGroups(parent, name string) int {
	removed := 0
	entries, _ := os.ReadDir(parent)
	for _, entry := range entries {
		pidText, ok := strings.CutPrefix(entry.Name(), name+"-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || !entry.IsDir() || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		dir := filepath.Join(parent, entry.Name())
		actions, _ := os.ReadDir(dir)
		for _, action := range actions {
			if action.IsDir() {
				// cgroup v2 only: end whatever escaped the
				// sandbox's pid namespace (nothing should have).
				killCgroup(filepath.Join(dir, action.Name()))
				if removeCgroup(filepath.Join(dir, action.Name())) == nil {
					removed++
				}
			}
		}
		if removeCgroup(dir) == nil {
			removed++
		}
	}
	return removed
}

func (m *cgroupV1) String() string { return fmt.Sprintf("cgroup v1 at %s", m.dirs["memory"]) }

func (m *cgroupV1) Close() error {
	m.idle.close()
	var first error
	for _, dir := range m.dirs {
		if err := removeCgroupTree(dir); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (m *cgroupV1) Create(name string, limits Limits) (ActionCgroup, error) {
	// One hierarchy per controller in v1: create, join and remove a
	// group only where a limit needs it (three of each would cost more
	// than the rest of a small action's bookkeeping).
	needed := map[string]bool{"memory": limits.MemoryBytes > 0, "pids": limits.MaxProcesses > 0, "cpu": limits.CPUMillis > 0}
	if c := m.idle.take(needed); c != nil {
		if err := c.reuse(limits); err == nil {
			return c, nil
		}
		c.remove()
	}
	c := &cgroupV1Action{dirs: map[string]string{}, manager: m}
	for controller, parent := range m.dirs {
		if !needed[controller] {
			continue
		}
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			c.Remove()
			return nil, fmt.Errorf("cgroup v1 %s: %w", controller, err)
		}
		c.dirs[controller] = dir
	}
	if err := c.setLimits(limits); err != nil {
		c.Remove()
		return nil, err
	}
	return c, nil
}

type cgroupV1Action struct {
	dirs    map[string]string
	manager *cgroupV1
	// The counters of a reused group as its previous actions left
	// them: Stats reports what this action added.
	oomKillsBefore, pidsMaxBefore int64
}

func (c *cgroupV1Action) setLimits(limits Limits) error {
	if limits.MemoryBytes > 0 {
		if err := writeCgroupFile(c.dirs["memory"], "memory.limit_in_bytes", fmt.Sprint(limits.MemoryBytes)); err != nil {
			return err
		}
	}
	if limits.MaxProcesses > 0 {
		if err := writeCgroupFile(c.dirs["pids"], "pids.max", fmt.Sprint(limits.MaxProcesses)); err != nil {
			return err
		}
	}
	if limits.CPUMillis > 0 {
		const period = 100000
		if err := writeCgroupFile(c.dirs["cpu"], "cpu.cfs_period_us", fmt.Sprint(period)); err != nil {
			return err
		}
		if err := writeCgroupFile(c.dirs["cpu"], "cpu.cfs_quota_us", fmt.Sprint(limits.CPUMillis*period/1000)); err != nil {
			return err
		}
	}
	return nil
}

func (c *cgroupV1Action) Join(pid int) error {
	for _, dir := range c.dirs {
		if err := writeCgroupFile(dir, "cgroup.procs", fmt.Sprint(pid)); err != nil {
			return err
		}
	}
	return nil
}

// Leave moves pid to the worker's own subtree in each hierarchy, the
// parent of the action's groups (v1 lets a group with children hold
// processes).
func (c *cgroupV1Action) Leave(pid int) error {
	for _, dir := range c.dirs {
		if err := writeCgroupFile(filepath.Dir(dir), "cgroup.procs", fmt.Sprint(pid)); err != nil {
			return err
		}
	}
	return nil
}

func (c *cgroupV1Action) Stats() CgroupStats {
	var stats CgroupStats
	if pids, ok := c.dirs["pids"]; ok {
		if n, ok := readKeyedValue(filepath.Join(pids, "pids.events"), "max"); ok && n > c.pidsMaxBefore {
			stats.PidsLimitHit = true
		}
	}
	memory, ok := c.dirs["memory"]
	if !ok {
		return stats
	}
	if n, ok := readKeyedValue(filepath.Join(memory, "memory.oom_control"), "oom_kill"); ok && n > c.oomKillsBefore {
		stats.OOMKilled = true
	}
	if n, ok := readInt(filepath.Join(memory, "memory.max_usage_in_bytes")); ok {
		stats.MemoryPeakBytes = n
	}
	return stats
}

// Remove keeps an emptied group for the next action when the manager
// has room for it, else deletes it.
func (c *cgroupV1Action) Remove() error {
	if c.manager != nil && c.empty() && c.manager.idle.put(c) {
		return nil
	}
	return c.remove()
}

func (c *cgroupV1Action) remove() error {
	var first error
	for _, dir := range c.dirs {
		if err := removeCgroup(dir); err != nil && first == nil {
			first = err
		}
	}
	return first
}
