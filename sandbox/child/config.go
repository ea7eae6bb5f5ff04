// Package child is the part of the sandbox that runs inside the new
// namespaces, as their PID 1. It is kept free of heavy dependencies so
// that a small init binary (cmd/bitzel-sandbox-init) built from it
// starts in about a millisecond: a Go binary's start-up cost grows with
// its size (itab setup, package initialisers), and the worker binary,
// which links gRPC and bb-storage, takes several times longer.
package child

// The file descriptors the parent passes to the child, in order, after
// stdin, stdout and stderr.
const (
	// ConfigFD carries the Config as JSON; the parent closes its end
	// after writing it.
	ConfigFD = 3
	// StatusFD receives the Status as JSON just before PID 1 exits.
	StatusFD = 4
	// StartFD, when Config.WaitForStart is set, delivers one byte once
	// the parent has placed the child in its cgroups. EOF without the
	// byte means the parent gave up; the child exits.
	StartFD = 5
)

// EnvMarker is set in the environment of a worker binary re-executed
// as the sandbox init; its package initialiser dispatches on it.
const EnvMarker = "BITZEL_SANDBOX_INIT"

// Config is everything PID 1 needs to build the action's view of the
// world. Paths are host paths unless the field says otherwise.
type Config struct {
	// Overlays[0] is the exec root; the rest are mounted at their
	// Path relative to the exec root, parents before children.
	Overlays []Overlay `json:"overlays"`
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
	// TmpSizeBytes bounds the private tmpfs on /tmp.
	TmpSizeBytes int64  `json:"tmp_size_bytes"`
	Hostname     string `json:"hostname"`
	// Argv, Env and WorkingDirectory (relative to the exec root)
	// describe the command.
	Argv             []string `json:"argv"`
	Env              []string `json:"env"`
	WorkingDirectory string   `json:"working_directory"`
	// MaxProcesses, when the parent could not use a pids cgroup,
	// becomes RLIMIT_NPROC of the command, counted per user in the
	// sandbox's own user namespace.
	MaxProcesses uint64 `json:"max_processes,omitempty"`
	// WaitForStart makes PID 1 block on StartFD before doing anything.
	WaitForStart bool `json:"wait_for_start,omitempty"`
	// LegacyOverlay forces the mount(2) option string instead of the
	// fsopen API, to test the fallback on kernels that have both.
	LegacyOverlay bool `json:"legacy_overlay,omitempty"`
}

// Overlay is one overlay mount: read-only lowers (topmost first) under
// a private upper directory.
type Overlay struct {
	Path   string   `json:"path"`
	Lowers []string `json:"lowers"`
	Upper  string   `json:"upper"`
	Work   string   `json:"work"`
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
	// SetupNanos is how long building the sandbox took inside.
	SetupNanos int64 `json:"setup_nanos"`
}
