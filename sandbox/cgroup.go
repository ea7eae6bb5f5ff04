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
	// CloneFD returns a descriptor for CLONE_INTO_CGROUP when the
	// hierarchy supports it (v2), so the child starts inside.
	CloneFD() (int, bool)
	// Join moves a started process in (v1). The child waits for the
	// start signal until this is done.
	Join(pid int) error
	Stats() CgroupStats
	// Remove deletes the cgroup once its processes are gone.
	Remove() error
}

// CgroupStats are what a cgroup recorded about an action.
type CgroupStats struct {
	OOMKilled       bool
	MemoryPeakBytes int64
}
