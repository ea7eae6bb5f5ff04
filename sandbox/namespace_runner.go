package sandbox

// namespace_runner.go is the runner's life: its configuration, what
// NewNamespaceRunner checks and builds once, Run's registration and
// Close. One run is action_run.go (with action_spec.go and
// action_result.go); the PID 1s it runs in (zygote.go) come from
// zygote_pool.go.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/bitzel/bitzel-worker/sandbox/child"
)

// InitBinaryName is the small sandbox init built from
// cmd/bitzel-sandbox-init. When it sits next to the running
// executable it is preferred over re-executing the worker itself.
const InitBinaryName = child.InitBinaryName

// DefaultExecRootPath is where the exec root appears in a sandbox that
// binds the host userland.
const DefaultExecRootPath = "/bitzel/execroot"

// DefaultHostPaths are the parts of the host userland an action sees,
// read-only: what a shell, coreutils and a compiler need. Never /root,
// /home, /var, the host /tmp or the worker's data directory.
var DefaultHostPaths = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"}

// Config configures a namespace Runner.
type Config struct {
	// InitPath is the binary that becomes PID 1 of each sandbox. Empty
	// means InitBinaryName next to the running executable if present,
	// else the running executable (which must dispatch the child mode
	// by importing sandbox/child).
	InitPath string
	// StateDir holds the worker's sandbox state (the new-root mount
	// point). When running as root it must be searchable by the
	// mapped ids.
	StateDir string
	// ExecRootPath is where the exec root appears in the sandbox.
	ExecRootPath string
	// ExecRootIsRoot makes the exec root the whole root file system
	// (the action supplies its userland as layers); HostPaths are then
	// not bound.
	ExecRootIsRoot bool
	// HostPaths are bound read-only; nil means DefaultHostPaths.
	HostPaths []string
	// Hostname of every sandbox.
	Hostname string
	// HostIDBase and HostIDCount: when the worker runs as root, the
	// action's uids and gids 0..HostIDCount-1 map to this host range,
	// so an action's root is never the host's root. A rootless worker
	// maps 0 to its own ids instead.
	HostIDBase  uint32
	HostIDCount uint32
	// Cgroups enforces Limits; nil means no cgroups. The runner owns
	// it: Close closes it.
	Cgroups CgroupManager
	// LegacyOverlay forces the mount(2) overlay options (for tests).
	LegacyOverlay bool
	// WarmSandboxes is how many sandboxes (PID 1s, each serving one
	// action after another) are started and prepared when the runner
	// is made, rather than by the first actions. Each costs an idle
	// PID 1 of a few MiB and a set of namespaces.
	WarmSandboxes int
	// MaxProcesses is the actions' usual Limits.MaxProcesses. Without
	// cgroups it is a PID 1's RLIMIT_NPROC, which cannot be raised
	// again: the warm sandboxes are prepared with it, and an action
	// with another limit gets a sandbox of its own.
	MaxProcesses int64
	// DataRoots are the host directories under which every path of a
	// Spec's mounts lies (layers, upper and work directories): a
	// sandbox binds them once and reaches the layers through them.
	// Empty means "/", which serves any path at the cost of a copy of
	// every host mount per action; the worker passes its data
	// directory.
	DataRoots []string
	// Seccomp is the actions' system-call filter; empty means
	// SeccompDefault.
	Seccomp SeccompMode
	// ShmSizeBytes bounds each sandbox's /dev/shm, a tmpfs of its own
	// (a container's --shm-size never reaches it); 0 means
	// DefaultShmSizeBytes. Its pages count against the action's
	// memory limit like any other.
	ShmSizeBytes int64
	// Slots is how many actions run at once, among which the
	// per-user-namespace budgets are split (userns_budget.go), and how
	// many PID 1s are kept between actions; 0 means runtime.NumCPU(),
	// the worker's default concurrency.
	Slots int
}

// DefaultShmSizeBytes is /dev/shm's size when Config sets none: room
// for POSIX shared memory of Python multiprocessing (BitBake) or a
// browser under test, which the 64 MiB of Docker's default starve.
const DefaultShmSizeBytes = 1 << 30

// Defaults for the id mapping of a worker running as root. The range is
// high enough not to collide with ordinary users or /etc/subuid ranges.
const (
	DefaultHostIDBase  = 1_000_000_000
	DefaultHostIDCount = 65536
)

// ActionRootIDs returns the host uid and gid that an action's root
// maps to. Layer files and directories must belong to them: inside the
// user namespace, a file whose owner is not mapped cannot be written or
// copied up even by the namespace's root, so an action could not modify
// its inputs (in its upper directory) as it can under Bazel's sandbox.
// Ownership gives no access to the cached inode itself, which the
// action only ever sees through the overlay.
func (c Config) ActionRootIDs() (uid, gid int) {
	if os.Geteuid() != 0 {
		return os.Geteuid(), os.Getegid()
	}
	base := c.HostIDBase
	if base == 0 {
		base = DefaultHostIDBase
	}
	return int(base), int(base)
}

type namespaceRunner struct {
	config   Config
	prepare  *child.Prepare
	initPath string
	newRoot  string
	rootless bool
	uidMap   []child.IDMap
	gidMap   []child.IDMap
	sequence atomic.Uint64
	budget   *UserNamespaceBudget

	launcher *launcher
	// pool holds the PID 1s between actions.
	pool *zygotePool
	// devNull is every PID 1's stdout.
	devNull *os.File

	// runs are the Runs in flight, each with the cancel function of
	// its context: Close ends them and waits for them before it
	// removes the cgroups they are charged to (removing those first
	// fails with EBUSY and left the runner's own cgroup behind).
	runs      sync.WaitGroup
	runsMu    sync.Mutex
	closed    bool
	cancels   map[uint64]context.CancelCauseFunc
	nextRunID uint64
	// exiting counts the PID 1s being retired and the cgroups being
	// released in the background.
	exiting   sync.WaitGroup
	closeOnce sync.Once
}

// NewNamespaceRunner checks what it can up front, so that a worker
// without user namespaces or with a bad state directory says so at
// start-up rather than on the first action.
func NewNamespaceRunner(config Config) (Runner, error) {
	if config.StateDir == "" {
		return nil, errors.New("sandbox: no state directory configured")
	}
	mode, err := ParseSeccompMode(string(config.Seccomp))
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	filter, err := compileSeccomp(mode)
	if err != nil {
		return nil, err
	}
	if err := config.setPaths(); err != nil {
		return nil, err
	}
	if len(config.DataRoots) == 0 {
		config.DataRoots = []string{"/"}
	}
	for i, root := range config.DataRoots {
		if !filepath.IsAbs(root) {
			return nil, fmt.Errorf("sandbox: data root %q is not an absolute path", root)
		}
		config.DataRoots[i] = filepath.Clean(root)
	}
	r := &namespaceRunner{config: config, newRoot: filepath.Join(config.StateDir, "root")}
	if err := os.MkdirAll(r.newRoot, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox: create new-root mount point: %w", err)
	}
	if err := r.resolveInit(); err != nil {
		return nil, err
	}
	if err := r.setIDMappings(); err != nil {
		return nil, err
	}
	if !r.rootless {
		if err := checkSearchable(r.newRoot, int(r.config.HostIDBase)); err != nil {
			return nil, err
		}
	}
	if err := checkUserNamespaces(); err != nil {
		return nil, err
	}
	r.prepare = r.newPrepare(filter)
	slots := config.Slots
	if slots <= 0 {
		slots = runtime.NumCPU()
	}
	if r.budget, err = NewUserNamespaceBudget(slots); err != nil {
		return nil, err
	}
	if r.devNull, err = os.Open(os.DevNull); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	r.setUpPool(slots)
	return r, nil
}

// setPaths fills in the defaults of the paths and hostname and checks
// that the exec root can be mounted where the configuration says.
func (c *Config) setPaths() error {
	if c.ExecRootPath == "" {
		c.ExecRootPath = DefaultExecRootPath
	}
	if !filepath.IsAbs(c.ExecRootPath) || filepath.Clean(c.ExecRootPath) == "/" {
		return fmt.Errorf("sandbox: exec root path %q must be absolute and not /", c.ExecRootPath)
	}
	if c.HostPaths == nil {
		c.HostPaths = DefaultHostPaths
	}
	// The exec root is mounted before /tmp and must not be hidden by
	// it, nor hide (or be hidden by) a host bind or /proc or /dev.
	if !c.ExecRootIsRoot {
		for _, reserved := range append([]string{"/tmp", "/proc", "/dev"}, c.HostPaths...) {
			if within(c.ExecRootPath, reserved) || within(reserved, c.ExecRootPath) {
				return fmt.Errorf("sandbox: exec root path %q overlaps %s, which the sandbox mounts", c.ExecRootPath, reserved)
			}
		}
	}
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	return nil
}

// newPrepare is what every sandbox of the runner is prepared with.
func (r *namespaceRunner) newPrepare(filter []byte) *child.Prepare {
	prepare := &child.Prepare{
		SeccompFilter:  filter,
		NewRoot:        r.newRoot,
		ExecRootPath:   r.config.ExecRootPath,
		ExecRootIsRoot: r.config.ExecRootIsRoot,
		Hostname:       r.config.Hostname,
		LegacyOverlay:  r.config.LegacyOverlay,
		ShmSizeBytes:   r.config.ShmSizeBytes,
		DataRoots:      r.config.DataRoots,
	}
	if prepare.ShmSizeBytes <= 0 {
		prepare.ShmSizeBytes = DefaultShmSizeBytes
	}
	if !r.config.ExecRootIsRoot {
		prepare.HostPaths = r.config.HostPaths
	}
	return prepare
}

// setUpPool configures the launcher (its process starts with the
// first sandbox) and the pool of PID 1s started through it, and starts
// the warm ones.
func (r *namespaceRunner) setUpPool(slots int) {
	// Each PID 1 gets a user namespace of its own, below the
	// launcher's: the launcher's bounds all sandboxes together, each
	// PID 1's the actions of its slot (userns_budget.go).
	r.prepare.UserNamespaceLimits = &r.budget.PerAction
	r.launcher = newLauncher(r.initPath, child.LauncherConfig{
		InUserNamespace:       true,
		SandboxUserNamespaces: true,
		UserNamespaceLimits:   &r.budget.All,
		UIDMappings:           r.uidMap,
		GIDMappings:           r.gidMap,
		BecomeRoot:            !r.rootless,
		SetgroupsAllowed:      !r.rootless,
	})
	r.pool = &zygotePool{
		start: func(key zygoteKey) (*zygote, error) {
			prepare := *r.prepare
			prepare.MaxProcesses = key.maxProcesses
			return startZygote(r.launcher, &prepare, r.devNull)
		},
		retire: r.retire,
		// A PID 1 is back in the pool only once it has released its
		// last action's mounts, after the action's result: a slot
		// that goes on at once takes another meanwhile. Two per slot
		// keep that from starting and retiring PID 1s all the time.
		maxIdle: max(2*slots, r.config.WarmSandboxes),
		maxAge:  zygoteMaxAge,
	}
	if r.config.WarmSandboxes > 0 {
		key := zygoteKey{}
		if r.config.Cgroups == nil {
			key.maxProcesses = uint64(r.config.MaxProcesses)
		}
		r.pool.warm(r.config.WarmSandboxes, key)
	}
}

func (r *namespaceRunner) resolveInit() error {
	if r.config.InitPath != "" {
		if _, err := os.Stat(r.config.InitPath); err != nil {
			return fmt.Errorf("sandbox: init binary: %w", err)
		}
		r.initPath = r.config.InitPath
		return checkInitProtocol(r.initPath)
	}
	r.initPath = "/proc/self/exe"
	if self, err := os.Executable(); err == nil {
		sibling := filepath.Join(filepath.Dir(self), InitBinaryName)
		if info, err := os.Stat(sibling); err == nil && info.Mode().IsRegular() {
			r.initPath = sibling
			return checkInitProtocol(sibling)
		}
	}
	return nil
}

// checkInitProtocol refuses an init binary that speaks another version
// of the worker's protocol than this build: one left from an older
// build would misread every action (a renamed field reads as absent)
// and fail it with a message about the action, not the binary.
func checkInitProtocol(path string) error {
	cmd := exec.Command(path)
	cmd.Env = []string{child.ProtocolQueryEnv + "=1"}
	out, err := cmd.Output()
	got := strings.TrimSpace(string(out))
	if err != nil || got != strconv.Itoa(child.ProtocolVersion) {
		if got == "" {
			got = "none (an older build)"
		}
		return fmt.Errorf("sandbox: %s speaks sandbox protocol %s, this worker %d: it is from another build; rebuild it with the worker (go build -o bin/ ./cmd/...) or remove it", path, got, child.ProtocolVersion)
	}
	return nil
}

func (r *namespaceRunner) setIDMappings() error {
	uid, gid := os.Geteuid(), os.Getegid()
	if uid != 0 {
		r.rootless = true
		r.uidMap = []child.IDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		r.gidMap = []child.IDMap{{ContainerID: 0, HostID: gid, Size: 1}}
		return nil
	}
	base, count := r.config.HostIDBase, r.config.HostIDCount
	if base == 0 {
		base = DefaultHostIDBase
	}
	if count == 0 {
		count = DefaultHostIDCount
	}
	if uint64(base)+uint64(count) >= 1<<32-1 {
		return fmt.Errorf("sandbox: host id range %d+%d does not fit in 32 bits", base, count)
	}
	r.config.HostIDBase, r.config.HostIDCount = base, count
	r.uidMap = []child.IDMap{{ContainerID: 0, HostID: int(base), Size: int(count)}}
	r.gidMap = r.uidMap
	return nil
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	path, dir = filepath.Clean(path), filepath.Clean(dir)
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// checkSearchable makes sure the ids a root worker maps actions to can
// reach path: every directory on the way must be searchable by others,
// or by its group when that is the actions' root gid (a data directory
// closed to other host users is 0710 with that group).
// t.TempDir and mktemp -d make 0700 directories, which would otherwise
// fail inside the child with a bare "permission denied".
func checkSearchable(path string, actionGID int) error {
	for dir := path; ; dir = filepath.Dir(dir) {
		info, err := os.Stat(dir)
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		byGroup := info.Mode().Perm()&0o010 != 0 && int(info.Sys().(*syscall.Stat_t).Gid) == actionGID
		if info.Mode().Perm()&0o001 == 0 && !byGroup {
			return fmt.Errorf("sandbox: %q is not searchable by others (mode %v); the unprivileged ids actions run as could not reach %q", dir, info.Mode().Perm(), path)
		}
		if dir == "/" {
			return nil
		}
	}
}

// checkUserNamespaces turns the kernel's knobs into a message a person
// can act on; otherwise the first clone fails with a bare EPERM.
func checkUserNamespaces() error {
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		return errors.New("sandbox: this kernel has no user namespaces (CONFIG_USER_NS)")
	}
	if data, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && string(data) == "0\n" {
		return errors.New("sandbox: user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)")
	}
	if data, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && string(data) == "0\n" && os.Geteuid() != 0 {
		return errors.New("sandbox: unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0)")
	}
	return nil
}

// ErrRunnerClosed is the error of a Run after Close, and of one that
// Close ended.
var ErrRunnerClosed = errors.New("sandbox runner closed")

// beginRun registers a Run, refusing it once Close has begun; end
// unregisters it. The context it returns is cancelled by Close.
func (r *namespaceRunner) beginRun(ctx context.Context) (runCtx context.Context, end func(), err error) {
	r.runsMu.Lock()
	defer r.runsMu.Unlock()
	if r.closed {
		return nil, nil, fmt.Errorf("sandbox: %w", ErrRunnerClosed)
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	if r.cancels == nil {
		r.cancels = map[uint64]context.CancelCauseFunc{}
	}
	r.nextRunID++
	id := r.nextRunID
	r.cancels[id] = cancel
	r.runs.Add(1)
	return runCtx, func() {
		r.runsMu.Lock()
		delete(r.cancels, id)
		r.runsMu.Unlock()
		cancel(nil)
		r.runs.Done()
	}, nil
}

// Close refuses new Runs, kills the running actions, retires the idle
// sandboxes, waits for the actions (their PID 1s reaped, their cgroups
// removed), stops the launcher, and only then removes the runner's
// own cgroups, which the kernel refuses while anything is charged to
// them. Its error is that removal's.
func (r *namespaceRunner) Close() error {
	var err error
	r.closeOnce.Do(func() {
		defer func() {
			if r.config.Cgroups != nil {
				err = r.config.Cgroups.Close()
			}
		}()
		r.runsMu.Lock()
		r.closed = true
		for _, cancel := range r.cancels {
			cancel(ErrRunnerClosed)
		}
		r.runsMu.Unlock()
		// The pool stops starting sandboxes and retires those it
		// holds while the runs end; a run that takes one after this
		// starts its own, which its cancelled context then kills, and
		// the PID 1s of the runs are retired as they end.
		r.pool.close()
		r.runs.Wait()
		r.exiting.Wait()
		r.launcher.close()
		r.devNull.Close()
	})
	return err
}

// String says how action ids map to host ids, for logs.
func (r *namespaceRunner) String() string {
	return r.ids() + "; " + r.budget.String() + HostTreesRebuilt(r.prepare.HostPaths)
}

func (r *namespaceRunner) ids() string {
	if r.rootless {
		return fmt.Sprintf("rootless: action uid 0 = host uid %d", os.Geteuid())
	}
	return fmt.Sprintf("root: action uids 0..%d = host uids %d..%d", r.config.HostIDCount-1, r.config.HostIDBase, r.config.HostIDBase+r.config.HostIDCount-1)
}

var _ fmt.Stringer = (*namespaceRunner)(nil)
