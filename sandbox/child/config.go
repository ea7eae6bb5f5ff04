// Package child is the part of the sandbox that runs inside the new
// namespaces, as their PID 1. It is kept free of heavy dependencies so
// that a small init binary (cmd/bitzel-sandbox-init) built from it
// starts in about a millisecond: a Go binary's start-up cost grows with
// its size (itab setup, package initialisers), and the worker binary,
// which links gRPC and bb-storage, takes several times longer.
//
// A PID 1 serves one slot of the worker: one action after another
// (zygote.go). Started once, it builds from a Prepare message what
// every action shares, a read-only template root (host views, /proc,
// /dev, the worker's data directories bound where it can reach them)
// and pivots into it. Each Action then gets mount, IPC and UTS
// namespaces of its own, made by a thread of PID 1 that mounts the
// action's overlays and /tmp, isolates itself and starts the command
// (action_thread.go, action_root.go). The user, pid and network
// namespaces are the slot's: creating them, starting a Go process and
// building the template are paid once per slot rather than once per
// action, and PID 1 checks after each action that the network it
// shares holds nothing the next could see (network.go).
package child

// The file descriptors the parent passes to the child, after stdin,
// stdout and stderr.
const (
	// ConfigFD carries a Prepare, then one Action per action (wire.go
	// frames). EOF while PID 1 waits for an Action means the worker is
	// done with it: PID 1 exits quietly.
	ConfigFD = 3
	// ControlFD is a SOCK_SEQPACKET socket. The worker sends on it,
	// with each Action, the action's stdout and stderr (SCM_RIGHTS,
	// message ActionFilesMessage); PID 1 sends on it the disk-budget
	// tmpfs of an action (DiskBudgetMessage), each action's Status and
	// then ReleasedMessage.
	ControlFD = 4
)

// ActionFilesMessage is the one-byte message whose SCM_RIGHTS are an
// action's stdout and stderr, in that order.
const ActionFilesMessage = 'F'

// ActionFiles is the number of descriptors of ActionFilesMessage.
const ActionFiles = 2

// ReleasedMessage follows each Status on the control socket once no
// mount of the action is left (its overlays are unmounted).
const ReleasedMessage = 'R'

// InitBinaryName is argv[0] of every sandbox's PID 1.
const InitBinaryName = "bitzel-sandbox-init"

// EnvMarker is set in the environment of a worker binary re-executed
// as the sandbox init; its package initialiser dispatches on it.
const EnvMarker = "BITZEL_SANDBOX_INIT"

// Prepare is what every sandbox of a worker shares. Paths are host
// paths unless the field says otherwise.
type Prepare struct {
	// NewRoot is an empty host directory. A tmpfs mounted on it in
	// the child's private mount namespace becomes the root, so one
	// directory serves every concurrent sandbox.
	NewRoot string `json:"new_root"`
	// ExecRootPath is where the exec root appears inside the sandbox.
	ExecRootPath string `json:"exec_root_path"`
	// ExecRootIsRoot makes the exec root overlay the whole root file
	// system (a hermetic userland supplied as a layer) instead of
	// mounting it at ExecRootPath under host binds.
	ExecRootIsRoot bool `json:"exec_root_is_root,omitempty"`
	// HostPaths are bound read-only at the same path (or recreated as
	// the same symlink when the host path is one).
	HostPaths []string `json:"host_paths,omitempty"`
	Hostname  string   `json:"hostname"`
	// LegacyOverlay forces the mount(2) option string instead of the
	// fsopen API, to test the fallback on kernels that have both.
	LegacyOverlay bool `json:"legacy_overlay,omitempty"`
	// SeccompFilter is the command's system-call filter, a struct
	// sock_filter array compiled by the worker; empty: none.
	SeccompFilter []byte `json:"seccomp_filter,omitempty"`
	// ShmSizeBytes bounds the sandbox's /dev/shm tmpfs.
	ShmSizeBytes int64 `json:"shm_size_bytes"`
	// UserNamespaceLimits, set when PID 1 is root of a user namespace
	// of its own, are the slot's share of the per-user-namespace
	// budgets, written into that namespace while it is prepared.
	UserNamespaceLimits *UserNamespaceLimits `json:"user_namespace_limits,omitempty"`
	// DataRoots are host directories under which every path of an
	// Action's mounts lies (layers, upper and work directories). Each
	// is bound into the template at DataRootDir/<index>, where the
	// action's thread reaches it to mount the overlays and detaches it
	// before the command starts. "/" serves any path, at the cost of
	// a copy of every host mount per action.
	DataRoots []string `json:"data_roots"`
	// MaxProcesses, when the worker has no pids cgroup, is PID 1's
	// RLIMIT_NPROC (soft and hard), which every action inherits. It is
	// counted per user in the slot's user namespace, PID 1's own few
	// threads included (as a pids cgroup counts them), and cannot be
	// raised again once lowered: a slot serves only actions with this
	// limit.
	MaxProcesses uint64 `json:"max_processes,omitempty"`
}

// DataRootDir is where the template holds the binds of the data roots
// and the action's staging mount points.
const (
	TemplateDir = "/.bitzel"
	DataRootDir = TemplateDir + "/data"
	// stagingBudget and stagingLinks, in DataRootDir, are where an
	// action's disk budget and layer links are mounted.
	stagingBudget = "rw"
	stagingLinks  = "links"
)

// Action is one action's part of the sandbox and its command.
type Action struct {
	// Mounts[0] is the exec root; the rest are mounted at their Path
	// relative to the exec root, parents before children.
	Mounts []Mount `json:"mounts"`
	// TmpSizeBytes bounds the private tmpfs on /tmp.
	TmpSizeBytes int64 `json:"tmp_size_bytes"`
	// Argv, Env and WorkingDirectory (relative to the exec root)
	// describe the command.
	Argv             []string `json:"argv"`
	Env              []string `json:"env"`
	WorkingDirectory string   `json:"working_directory"`
	// ExecRootIsRoot makes this action's exec root the whole root
	// file system (its userland comes in its layers), whatever the
	// Prepare says.
	ExecRootIsRoot bool `json:"exec_root_is_root,omitempty"`
	// DiskBytes, when set, bounds everything the action writes to its
	// overlays: their upper and work directories move to a tmpfs of
	// this size (see disk_budget.go).
	DiskBytes int64 `json:"disk_bytes,omitempty"`
}

// Mount is one overlay: read-only Layers (topmost first) under a
// private UpperDir, with WorkDir on the same file system as UpperDir.
// Path is relative to the exec root ("" for the exec root itself).
// It is the one description of a mount from the worker's plan to this
// PID 1: package sandbox aliases it as sandbox.Mount, so the worker's
// Spec is sent as it is, with no copy field by field.
type Mount struct {
	Path     string   `json:"path"`
	Layers   []string `json:"layers"`
	UpperDir string   `json:"upper_dir"`
	WorkDir  string   `json:"work_dir"`
}

// Status is what PID 1 reports about the command.
type Status struct {
	// Error is set when the sandbox could not be built or the command
	// could not be started; Stage says where.
	Error string `json:"error,omitempty"`
	Stage string `json:"stage,omitempty"`
	// NotFound distinguishes a command that does not exist, which the
	// worker reports as a failed action rather than a worker error.
	NotFound bool `json:"not_found,omitempty"`

	ExitCode int `json:"exit_code"`
	Signal   int `json:"signal,omitempty"`
	// Resource usage of every process PID 1 reaped, without PID 1's
	// own set-up work.
	UserTimeNanos   int64 `json:"user_time_nanos"`
	SystemTimeNanos int64 `json:"system_time_nanos"`
	MaxRSSBytes     int64 `json:"max_rss_bytes"`
	// SetupNanos is how long the action's part of the sandbox took,
	// from receiving the Action to starting the command.
	SetupNanos int64 `json:"setup_nanos"`
	// Retire: PID 1 exits after this Status instead of waiting for
	// another Action (the action changed something of PID 1's that
	// the next action would inherit, see health.go, or PID 1 could
	// not be made ready again). Every process of the action is gone
	// either way.
	Retire bool `json:"retire,omitempty"`
}
