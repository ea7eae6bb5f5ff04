package sandbox

import (
	"maps"
	"path/filepath"
	"strings"
	"sync"

	"github.com/bitzel/bitzel-worker/sandbox/child"
)

// In the v1 hierarchies, creating and removing a memory group per
// action is the largest part of the sandbox's cgroup cost: mkdir
// allocates the group's per-CPU statistics, rmdir takes it offline and
// a kernel worker frees it later (or, while page cache stays charged
// to it, never: a dying group that every memory operation then walks).
// So an action's group, once empty, is kept and handed to the next
// action that needs the same controllers, with its limits written
// again and its peak reset; the event counters, which cannot be reset,
// are read before the action and compared after.
//
// Nothing of one action reaches the next through its group: the group
// holds no process (Remove checks cgroup.procs), an action cannot
// change its group's settings (v1 cgroupfs mounts need CAP_SYS_ADMIN
// in the initial user namespace, and the host's /sys/fs/cgroup is not
// in the sandbox), and what stays charged is reclaimable page cache
// of files the previous action read, which the kernel reclaims before
// it counts towards the new limit's OOM.

// maxIdleCgroupsV1 bounds the groups kept: a worker runs a few actions
// at once, plus the ones whose PID 1 is still being torn down.
const maxIdleCgroupsV1 = 8

// idleCgroupsV1 is the manager's stock of empty action groups.
type idleCgroupsV1 struct {
	mu     sync.Mutex
	groups []*cgroupV1Action
	closed bool
}

// take returns an idle group with exactly the needed controllers, or
// nil.
func (p *idleCgroupsV1) take(needed map[string]bool) *cgroupV1Action {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, c := range p.groups {
		if maps.Equal(needed, c.controllers()) {
			p.groups = append(p.groups[:i], p.groups[i+1:]...)
			return c
		}
	}
	return nil
}

// put keeps c unless the stock is full or the manager is closing.
func (p *idleCgroupsV1) put(c *cgroupV1Action) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.groups) >= maxIdleCgroupsV1 {
		return false
	}
	p.groups = append(p.groups, c)
	return true
}

// close stops keeping groups; the manager's Close removes those kept
// with its subtree.
func (p *idleCgroupsV1) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.groups = nil
}

// controllers says, for every controller, whether c has a group in it.
func (c *cgroupV1Action) controllers() map[string]bool {
	has := map[string]bool{}
	for _, controller := range cgroupV1Controllers {
		_, has[controller] = c.dirs[controller]
	}
	return has
}

// empty: no process is in any of c's groups.
func (c *cgroupV1Action) empty() bool {
	for _, dir := range c.dirs {
		procs, err := child.ReadFileDirect(filepath.Join(dir, "cgroup.procs"))
		if err != nil || strings.TrimSpace(string(procs)) != "" {
			return false
		}
	}
	return true
}

// reuse readies an idle group for a new action: its limits, its peak,
// and the counters Stats compares against.
func (c *cgroupV1Action) reuse(limits Limits) error {
	if memory, ok := c.dirs["memory"]; ok {
		if err := writeCgroupFile(memory, "memory.max_usage_in_bytes", "0"); err != nil {
			return err
		}
		c.oomKillsBefore, _ = readKeyedValue(filepath.Join(memory, "memory.oom_control"), "oom_kill")
	}
	if pids, ok := c.dirs["pids"]; ok {
		c.pidsMaxBefore, _ = readKeyedValue(filepath.Join(pids, "pids.events"), "max")
	}
	return c.setLimits(limits)
}
