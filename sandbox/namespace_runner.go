package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bitzel/bitzel-worker/sandbox/child"
	"golang.org/x/sys/unix"
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
	// WarmSandboxes is how many sandboxes are kept started and
	// prepared ahead of need (0: each Run starts its own). Each costs
	// an idle PID 1 of a few MiB and a set of namespaces.
	WarmSandboxes int
	// Seccomp is the actions' system-call filter; empty means
	// SeccompDefault.
	Seccomp SeccompMode
	// ShmSizeBytes bounds each sandbox's /dev/shm, a tmpfs of its own
	// (a container's --shm-size never reaches it); 0 means
	// DefaultShmSizeBytes. Its pages count against the action's
	// memory limit like any other.
	ShmSizeBytes int64
	// Slots is how many actions run at once, among which the
	// per-user-namespace budgets are split (userns_budget.go); 0
	// means runtime.NumCPU(), the worker's default concurrency.
	Slots int
	// ShareUserNamespace, with Cgroups, runs every sandbox in the one
	// user namespace of the launcher, which lets it vfork (cheaper per
	// action) but lets one action take the inotify instances and the
	// other per-user-namespace budgets of all actions, though never
	// the host's reserve.
	ShareUserNamespace bool
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
	uidMap   []syscall.SysProcIDMap
	gidMap   []syscall.SysProcIDMap
	sequence atomic.Uint64
	budget   *UserNamespaceBudget

	launcher *launcher
	// runs are the Runs in flight, each with the cancel function of
	// its context: Close ends them and waits for them before it
	// removes the cgroups they are charged to (removing those first
	// fails with EBUSY and left the runner's own cgroup behind).
	runs      sync.WaitGroup
	runsMu    sync.Mutex
	closed    bool
	cancels   map[uint64]context.CancelCauseFunc
	nextRunID uint64

	exiting    sync.WaitGroup
	pool       chan *warmSandbox
	closing    chan struct{}
	closeOnce  sync.Once
	fillerDone chan struct{}
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
	if config.ExecRootPath == "" {
		config.ExecRootPath = DefaultExecRootPath
	}
	if !filepath.IsAbs(config.ExecRootPath) || filepath.Clean(config.ExecRootPath) == "/" {
		return nil, fmt.Errorf("sandbox: exec root path %q must be absolute and not /", config.ExecRootPath)
	}
	if config.HostPaths == nil {
		config.HostPaths = DefaultHostPaths
	}
	// The exec root is mounted before /tmp and must not be hidden by
	// it, nor hide (or be hidden by) a host bind or /proc or /dev.
	if !config.ExecRootIsRoot {
		for _, reserved := range append([]string{"/tmp", "/proc", "/dev"}, config.HostPaths...) {
			if within(config.ExecRootPath, reserved) || within(reserved, config.ExecRootPath) {
				return nil, fmt.Errorf("sandbox: exec root path %q overlaps %s, which the sandbox mounts", config.ExecRootPath, reserved)
			}
		}
	}
	if config.Hostname == "" {
		config.Hostname = "localhost"
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
	r.prepare = &child.Prepare{
		SeccompFilter:  filter,
		NewRoot:        r.newRoot,
		ExecRootPath:   config.ExecRootPath,
		ExecRootIsRoot: config.ExecRootIsRoot,
		Hostname:       config.Hostname,
		LegacyOverlay:  config.LegacyOverlay,
		ShmSizeBytes:   config.ShmSizeBytes,
	}
	if r.prepare.ShmSizeBytes <= 0 {
		r.prepare.ShmSizeBytes = DefaultShmSizeBytes
	}
	if !config.ExecRootIsRoot {
		r.prepare.HostPaths = config.HostPaths
	}
	if config.Slots <= 0 {
		config.Slots = runtime.NumCPU()
	}
	budget, err := NewUserNamespaceBudget(config.Slots)
	if err != nil {
		return nil, err
	}
	// Sharing one user namespace lets the launcher vfork (see
	// child/launcher.go), but only a pids cgroup keeps each action's
	// process limit its own.
	shared := config.Cgroups != nil && config.ShareUserNamespace
	if !shared {
		r.prepare.UserNamespaceLimits = &budget.PerAction
	}
	r.budget = budget
	r.launcher = newLauncher(r.initPath, child.LauncherConfig{
		InUserNamespace:       true,
		SandboxUserNamespaces: !shared,
		UserNamespaceLimits:   &budget.All,
		UIDMappings:           toIDMaps(r.uidMap),
		GIDMappings:           toIDMaps(r.gidMap),
		BecomeRoot:            !r.rootless,
		SetgroupsAllowed:      !r.rootless,
	})
	r.closing = make(chan struct{})
	if config.WarmSandboxes > 0 {
		r.pool = make(chan *warmSandbox, config.WarmSandboxes)
		r.fillerDone = make(chan struct{})
		go r.keepWarm()
	}
	return r, nil
}

func (r *namespaceRunner) resolveInit() error {
	if r.config.InitPath != "" {
		if _, err := os.Stat(r.config.InitPath); err != nil {
			return fmt.Errorf("sandbox: init binary: %w", err)
		}
		r.initPath = r.config.InitPath
		return nil
	}
	r.initPath = "/proc/self/exe"
	if self, err := os.Executable(); err == nil {
		sibling := filepath.Join(filepath.Dir(self), InitBinaryName)
		if info, err := os.Stat(sibling); err == nil && info.Mode().IsRegular() {
			r.initPath = sibling
		}
	}
	return nil
}

func (r *namespaceRunner) setIDMappings() error {
	uid, gid := os.Geteuid(), os.Getegid()
	if uid != 0 {
		r.rootless = true
		r.uidMap = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		r.gidMap = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
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
	r.uidMap = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(base), Size: int(count)}}
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

// warmSandbox is a started PID 1 that has done its Prepare phase (or
// is doing it) and waits for an Action.
type warmSandbox struct {
	process *sandboxProcess
	pipes   *pipes
}

// startSandbox has the launcher start a PID 1 in new namespaces and
// sends it the Prepare message; it does not wait for the preparation.
func (r *namespaceRunner) startSandbox() (*warmSandbox, error) {
	return r.startSandboxWith(r.prepare)
}

func (r *namespaceRunner) startSandboxWith(prepare *child.Prepare) (*warmSandbox, error) {
	p, err := newPipes()
	if err != nil {
		return nil, err
	}
	process, err := r.launcher.launch(p.stdoutW, p.stderrW, p.configR, p.statusW)
	if err != nil {
		p.closeAll()
		return nil, err
	}
	p.closeChildEnds()
	// The pipe buffer holds the message whether or not PID 1 reads it
	// yet; a PID 1 that died shows up as a missing status later.
	json.NewEncoder(p.configW).Encode(prepare)
	return &warmSandbox{process: process, pipes: p}, nil
}

// discard ends a warm sandbox that will get no action: EOF on its
// config pipe makes PID 1 exit quietly.
func (s *warmSandbox) discard() {
	s.pipes.configW.Close()
	s.process.wait()
	s.pipes.closeAll()
}

// keepWarm keeps the pool full, so that an action's critical path
// starts at its own mounts rather than at clone(): namespace creation,
// the init's start-up and the shared mounts cost more than the
// action's part of the sandbox.
func (r *namespaceRunner) keepWarm() {
	defer close(r.fillerDone)
	for {
		s, err := r.startSandbox()
		if err != nil {
			// Run starts its own sandbox and reports the error there.
			select {
			case <-r.closing:
				return
			case <-time.After(time.Second):
				continue
			}
		}
		select {
		case r.pool <- s:
		case <-r.closing:
			s.discard()
			return
		}
	}
}

func (r *namespaceRunner) takeSandbox(spec *Spec) (*warmSandbox, error) {
	if spec.ExecRootIsRoot && !r.prepare.ExecRootIsRoot {
		// Warm sandboxes hold host binds; a whole-root action starts
		// its own, without them.
		wholeRoot := *r.prepare
		wholeRoot.ExecRootIsRoot = true
		wholeRoot.HostPaths = nil
		return r.startSandboxWith(&wholeRoot)
	}
	select {
	case s := <-r.pool:
		return s, nil
	default:
		return r.startSandbox()
	}
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

// Close refuses new Runs, kills the running actions and waits for them
// (their PID 1s reaped, their cgroups removed), discards the warm
// sandboxes, stops the launcher, and only then removes the runner's
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
		close(r.closing)
		r.runs.Wait()
		if r.pool != nil {
			<-r.fillerDone
			for {
				select {
				case s := <-r.pool:
					s.discard()
					continue
				default:
				}
				break
			}
		}
		r.exiting.Wait()
		r.launcher.close()
	})
	return err
}

func toIDMaps(maps []syscall.SysProcIDMap) []child.IDMap {
	result := make([]child.IDMap, len(maps))
	for i, m := range maps {
		result[i] = child.IDMap{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size}
	}
	return result
}

func (r *namespaceRunner) Run(ctx context.Context, spec *Spec) (*Result, error) {
	ctx, end, err := r.beginRun(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	if err := r.validate(spec); err != nil {
		return nil, err
	}
	if !r.rootless {
		if err := r.chownUppers(spec); err != nil {
			return nil, err
		}
	}
	action := r.action(spec)

	var cgroup ActionCgroup
	if r.config.Cgroups != nil {
		cgroup, err = r.config.Cgroups.Create(fmt.Sprintf("action-%d-%d", os.Getpid(), r.sequence.Add(1)), spec.Limits)
		if err != nil {
			return nil, fmt.Errorf("sandbox: create cgroup: %w", err)
		}
	} else {
		action.MaxProcesses = uint64(spec.Limits.MaxProcesses)
	}

	// What outlives the action: its cgroup and the pipes of its PID 1,
	// released once PID 1 has exited.
	var p *pipes
	release := func() {
		if cgroup != nil {
			cgroup.Remove()
		}
		if p != nil {
			p.closeAll()
		}
	}
	stdout, err := newCappedOutput(spec.StdoutPath, spec.Stdout, spec.OutputLimitBytes)
	if err != nil {
		release()
		return nil, err
	}
	defer stdout.Close()
	stderr, err := newCappedOutput(spec.StderrPath, spec.Stderr, spec.OutputLimitBytes)
	if err != nil {
		release()
		return nil, err
	}
	defer stderr.Close()

	s, err := r.takeSandbox(spec)
	if err != nil {
		release()
		return nil, err
	}
	p = s.pipes
	process := s.process
	if cgroup != nil {
		if err := cgroup.Join(process.pid); err != nil {
			process.kill()
			process.wait()
			release()
			return nil, fmt.Errorf("sandbox: join cgroup: %w", err)
		}
	}

	start := time.Now()
	var copies sync.WaitGroup
	copies.Add(2)
	go func() { defer copies.Done(); stdout.copyFrom(p.stdoutR) }()
	go func() { defer copies.Done(); stderr.copyFrom(p.stderrR) }()
	json.NewEncoder(p.configW).Encode(action)
	p.configW.Close()

	// Killing PID 1 makes the kernel kill every process of its pid
	// namespace, daemonised grandchildren included.
	var timedOut, cancelled atomic.Bool
	done := make(chan struct{})
	go func() {
		var timeout <-chan time.Time
		if spec.Timeout > 0 {
			timer := time.NewTimer(spec.Timeout)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-done:
			return
		case <-timeout:
			timedOut.Store(true)
		case <-ctx.Done():
			cancelled.Store(true)
		}
		process.kill()
	}()
	// PID 1 closes the status pipe once it has reaped every process of
	// the action and reported, or when it dies. After a report the
	// action is over: its output pipes are closed too, and PID 1's own
	// exit (tearing down the namespaces, a few milliseconds of RCU
	// grace periods) finishes in the background; Close waits for it.
	statusData, diskBudget := readStatus(p.statusR)
	var status child.Status
	reported := len(statusData) > 0 && json.Unmarshal(statusData, &status) == nil
	var exit child.ExitNotice
	// The exiting PID 1 unmounts the action's overlays itself (its
	// mount namespace dies with it), so once it is reaped its upper
	// and work directories are free.
	released := make(chan struct{})
	// The cgroup's counters are read before release may remove it
	// (release runs in the background once PID 1 is reaped, which can
	// be before this goroutine gets here): read after the removal, an
	// OOM kill reads as none and the result is cached.
	var stats CgroupStats
	if reported {
		// PID 1 reports only once it has reaped every other process
		// of the action, so the counters are final.
		stats = cgroupStats(cgroup)
		r.exiting.Add(1)
		go func() {
			defer r.exiting.Done()
			process.wait()
			// release closes the output pipes' read ends: not
			// before the copies have drained them, or the end of
			// the action's output is lost when PID 1 is reaped
			// first.
			copies.Wait()
			release()
			close(released)
		}()
	} else {
		exit = process.wait()
		stats = cgroupStats(cgroup)
		defer func() {
			release()
			close(released)
		}()
	}
	close(done)
	wall := time.Since(start)
	copies.Wait()

	result := &Result{
		DiskBudget:       diskBudget,
		Released:         released,
		WallTime:         wall,
		TimedOut:         timedOut.Load(),
		StdoutTruncated:  stdout.truncated,
		StderrTruncated:  stderr.truncated,
		OOMKilled:        stats.OOMKilled,
		PidsLimitHit:     stats.PidsLimitHit,
		CgroupMemoryPeak: stats.MemoryPeakBytes,
	}
	result.DiskBudgetExceeded = budgetFull(diskBudget)
	if cancelled.Load() {
		result.closeDiskBudget()
		return nil, fmt.Errorf("sandbox: %w", context.Cause(ctx))
	}
	if !reported {
		if !result.TimedOut && !result.OOMKilled {
			result.closeDiskBudget()
			return nil, fmt.Errorf("sandbox: init exited without reporting (wait status %v)", syscall.WaitStatus(exit.WaitStatus))
		}
		// Killed before it could report: take what wait4 saw.
		result.UserTime = time.Duration(exit.UserTimeNanos)
		result.SystemTime = time.Duration(exit.SystemTimeNanos)
		result.PeakRSSBytes = exit.MaxRSSBytes
		result.ExitCode = 128 + int(syscall.SIGKILL)
		result.Signal = syscall.SIGKILL
		return result, nil
	}
	if status.Error != "" && !status.NotFound {
		result.closeDiskBudget()
		return nil, fmt.Errorf("sandbox: %s: %s", status.Stage, status.Error)
	}
	result.ExitCode = status.ExitCode
	result.Signal = syscall.Signal(status.Signal)
	result.NotFound = status.NotFound
	result.UserTime = time.Duration(status.UserTimeNanos)
	result.SystemTime = time.Duration(status.SystemTimeNanos)
	result.PeakRSSBytes = status.MaxRSSBytes
	result.SetupTime = time.Duration(status.SetupNanos)
	return result, nil
}

func (r *namespaceRunner) action(spec *Spec) *child.Action {
	overlays := make([]child.Overlay, len(spec.Mounts))
	for i, m := range spec.Mounts {
		overlays[i] = child.Overlay{Path: m.Path, Lowers: m.Layers, Upper: m.UpperDir, Work: m.WorkDir}
	}
	return &child.Action{
		Overlays:         overlays,
		TmpSizeBytes:     spec.Limits.TmpSizeBytes,
		DiskBytes:        spec.Limits.DiskBytes,
		Argv:             spec.Argv,
		Env:              spec.Env,
		WorkingDirectory: spec.WorkingDirectory,
	}
}

// validate catches what would otherwise surface as an errno from deep
// inside the child, and names the offending path.
func (r *namespaceRunner) validate(spec *Spec) error {
	if len(spec.Argv) == 0 {
		return errors.New("sandbox: no command")
	}
	if len(spec.Mounts) == 0 || spec.Mounts[0].Path != "" {
		return errors.New("sandbox: the first mount must be the exec root (empty path)")
	}
	if !filepath.IsLocal(spec.WorkingDirectory) && spec.WorkingDirectory != "" {
		return fmt.Errorf("sandbox: working directory %q is not a relative path inside the exec root", spec.WorkingDirectory)
	}
	for i, m := range spec.Mounts {
		if i > 0 && !filepath.IsLocal(m.Path) {
			return fmt.Errorf("sandbox: mount path %q is not a relative path inside the exec root", m.Path)
		}
		if len(m.Layers) == 0 {
			return fmt.Errorf("sandbox: mount %q has no layers", m.Path)
		}
		if len(m.Layers) > child.MaxLowers {
			return fmt.Errorf("sandbox: mount %q has %d layers; the kernel allows %d", m.Path, len(m.Layers), child.MaxLowers)
		}
		for _, dir := range append([]string{m.UpperDir, m.WorkDir}, m.Layers...) {
			if !filepath.IsAbs(dir) {
				return fmt.Errorf("sandbox: mount %q: %q is not an absolute path", m.Path, dir)
			}
			var st unix.Stat_t
			if err := unix.Stat(dir, &st); err != nil {
				return fmt.Errorf("sandbox: mount %q: %q: %w", m.Path, dir, err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return fmt.Errorf("sandbox: mount %q: %q is not a directory", m.Path, dir)
			}
		}
	}
	return nil
}

// chownUppers hands the upper and work directories (and whatever the
// worker created in them, such as the parents of outputs) to the
// action's root. Inside the user namespace, files owned by an unmapped
// uid are not writable even by its root.
func (r *namespaceRunner) chownUppers(spec *Spec) error {
	id := int(r.config.HostIDBase)
	for _, m := range spec.Mounts {
		for _, dir := range []string{m.UpperDir, m.WorkDir} {
			err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				return os.Lchown(path, id, id)
			})
			if err != nil {
				return fmt.Errorf("sandbox: hand %q to the action's uid: %w", dir, err)
			}
		}
	}
	return nil
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
