package sandbox

// CgroupManager creates one cgroup per action, with its Limits.
type CgroupManager interface {
	Create(name string, limits Limits) (ActionCgroup, error)
	// Close removes what the manager created for itself.
	Close() error
	// String names the hierarchy, for the start-up log.
	String() string
}

// ActionCgroup is the cgroup of one action.
type ActionCgroup interface {
	// Join moves a sandbox's PID 1 in. PID 1 does nothing on the
	// action's behalf before it receives the action, which the runner
	// sends only after Join, so every process of the action is
	// accounted. (CLONE_INTO_CGROUP cannot serve: a PID 1 serves many
	// actions, and the command is started by one of its threads,
	// which cgroup v2 cannot move alone.)
	Join(pid int) error
	// Leave moves PID 1 out again, once every process of the action
	// is gone, into the manager's group of idle sandboxes: it waits
	// there for its next action, and the group can be removed or
	// reused.
	Leave(pid int) error
	Stats() CgroupStats
	// Remove deletes the cgroup once its processes are gone.
	Remove() error
}

// CgroupStats are what a cgroup recorded about an action.
type CgroupStats struct {
	OOMKilled bool
	// PidsLimitHit: a fork or clone failed at the process limit.
	PidsLimitHit    bool
	MemoryPeakBytes int64
}

// cgroupStats reads c's counters; a nil c (no cgroups) has none.
func cgroupStats(c ActionCgroup) CgroupStats {
	if c == nil {
		return CgroupStats{}
	}
	return c.Stats()
}
