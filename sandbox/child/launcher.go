package child

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The launcher is a small, long-lived process that starts sandboxes on
// the worker's behalf. Go cannot vfork a child that gets a new user
// namespace (the parent must write its id maps while the child waits),
// so starting one from the worker itself forks the whole worker: its
// page tables are copied and every page it then writes faults and
// shoots down TLBs on the other CPUs. Forking this small process
// instead costs a fraction of that, on every action.
//
// When a pids cgroup bounds each action's processes, the launcher is
// itself started in the sandboxes' user namespace (the worker maps its
// ids) and starts every sandbox inside it, with new mount, pid,
// network, ipc and uts namespaces but no new user namespace. That lets
// Go vfork: no page table copy, no copy-on-write faults, no address
// space to tear down at exec. The sandboxes then share that one user
// namespace, as rootless Podman's containers share its pause
// process's: they share their ids anyway, and the capabilities it
// grants act only on namespaces one can name, while each sandbox sees
// only its own processes, mounts and network (WORKSPACE.md). Without
// cgroups each sandbox gets a user namespace of its own, because
// RLIMIT_NPROC, the fallback process limit, counts per user namespace:
// shared, it would count every action's processes together.
//
// The worker and the launcher talk over a SOCK_SEQPACKET socket: a
// launch request carries the sandbox's stdout, stderr, config and
// status pipes as SCM_RIGHTS; the reply carries a pidfd of the new
// PID 1, and a notice follows when it has exited and been reaped.
const (
	// LauncherEnvMarker makes a re-executed binary the launcher.
	LauncherEnvMarker = "BITZEL_SANDBOX_LAUNCHER"
	// LauncherSocketFD is the launcher's end of the socket.
	LauncherSocketFD = 3
	// LauncherBinaryFD is the launcher's own executable, opened by
	// the worker: the launcher is executed as /proc/self/fd/4, maybe
	// as a namespace's root, which need not be able to search the
	// directories on the binary's path.
	LauncherBinaryFD = 4
	// LaunchFDs is the number of descriptors of a launch request:
	// stdout, stderr, the config pipe's read end and the status
	// pipe's write end, in that order.
	LaunchFDs = 4
)

// IDMap maps a range of ids of the sandbox's user namespace to the
// host. It is syscall's own type, which the worker and the launcher
// both hand to SysProcAttr, so the mappings go from the runner's
// configuration to clone(2) in either process without a conversion.
type IDMap = syscall.SysProcIDMap

// LauncherConfig is the first message on the socket.
type LauncherConfig struct {
	// InUserNamespace: the worker started the launcher in the
	// sandboxes' user namespace, with the mappings below; sandboxes
	// get no user namespace of their own. Otherwise each sandbox gets
	// one with these mappings.
	InUserNamespace bool    `json:"in_user_namespace,omitempty"`
	UIDMappings     []IDMap `json:"uid_mappings"`
	GIDMappings     []IDMap `json:"gid_mappings"`
	// BecomeRoot: a root launcher's child must setuid/setgid to the
	// namespace's 0 (its host uid 0 is not mapped).
	BecomeRoot       bool `json:"become_root,omitempty"`
	SetgroupsAllowed bool `json:"setgroups_allowed,omitempty"`
	// SandboxUserNamespaces, with InUserNamespace, still gives each
	// sandbox a user namespace of its own, a child of the launcher's
	// that maps the same ids to themselves. The launcher's namespace
	// then sums every sandbox's per-user-namespace charges under one
	// owner, so that the budget written there (UserNamespaceLimits)
	// bounds all actions together whatever ids they switch to, and
	// each sandbox's own namespace bounds its action (userns_limits.go).
	SandboxUserNamespaces bool `json:"sandbox_user_namespaces,omitempty"`
	// UserNamespaceLimits, with InUserNamespace, are written into the
	// launcher's namespace before any sandbox is started: the share of
	// the worker's budgets that all sandboxes together may take.
	UserNamespaceLimits *UserNamespaceLimits `json:"user_namespace_limits,omitempty"`
}

// LaunchRequest asks for one sandbox.
type LaunchRequest struct {
	ID uint64 `json:"id"`
}

// LauncherMessage is what the launcher sends: a reply to a request, or
// the exit of a sandbox it started.
type LauncherMessage struct {
	Reply *LaunchReply `json:"reply,omitempty"`
	Exit  *ExitNotice  `json:"exit,omitempty"`
}

// LaunchReply answers a request; on success a pidfd is attached.
type LaunchReply struct {
	ID    uint64 `json:"id"`
	PID   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// ExitNotice reports a reaped PID 1.
type ExitNotice struct {
	PID             int    `json:"pid"`
	WaitStatus      uint32 `json:"wait_status"`
	UserTimeNanos   int64  `json:"user_time_nanos"`
	SystemTimeNanos int64  `json:"system_time_nanos"`
	MaxRSSBytes     int64  `json:"max_rss_bytes"`
}

// initEnvironment is PID 1's whole environment. PID 1 mostly waits,
// in wait4 while a command runs: with a single P, the runtime's monitor
// thread takes that P back from the blocked system call every 20
// microseconds (there is no idle P to leave it be) and keeps waking
// itself that often. A second P stays idle, and the runtime then
// leaves a blocked P alone for 10 ms: 0.93x PID 1's and the launcher's
// CPU per action (BenchmarkSandboxAgainstBaseline). More would only
// add idle threads. PID 1 keeps its collector: it serves many actions.
var initEnvironment = []string{EnvMarker + "=1", "GOMAXPROCS=2"}

// LauncherMain runs the launcher until the worker closes the socket.
func LauncherMain() {
	if err := runLauncher(); err != nil {
		fmt.Fprintf(os.Stderr, "bitzel-sandbox launcher: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type launcherState struct {
	fd     int
	config LauncherConfig
	sendMu sync.Mutex
}

func runLauncher() error {
	unix.CloseOnExec(LauncherSocketFD)
	unix.Close(LauncherBinaryFD)
	nameThreads("bitzel-launcher")
	l := &launcherState{fd: LauncherSocketFD}
	buf := make([]byte, 64*1024)
	oob := make([]byte, unix.CmsgSpace(LaunchFDs*4))
	n, _, _, _, err := unix.Recvmsg(l.fd, buf, nil, 0)
	if err != nil || n == 0 {
		return fmt.Errorf("read config: %v", err)
	}
	if err := json.Unmarshal(buf[:n], &l.config); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	if l.config.InUserNamespace {
		// Before the first sandbox: a user namespace records the
		// message-queue limit of its creator when it is made.
		if err := l.config.UserNamespaceLimits.apply("/proc"); err != nil {
			return fmt.Errorf("the sandboxes' user namespace: %w", err)
		}
	}
	for {
		n, oobn, _, _, err := unix.Recvmsg(l.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			// The worker is gone. The sandboxes die with this
			// process (their parent-death signal).
			return nil
		}
		var request LaunchRequest
		fds, ferr := ParseRights(oob[:oobn])
		if jerr := json.Unmarshal(buf[:n], &request); jerr != nil || ferr != nil || len(fds) != LaunchFDs {
			for _, fd := range fds {
				unix.Close(fd)
			}
			l.send(LauncherMessage{Reply: &LaunchReply{ID: request.ID, Error: fmt.Sprintf("malformed launch request (%v, %v, %d descriptors)", jerr, ferr, len(fds))}}, -1)
			continue
		}
		l.launch(request.ID, fds)
	}
}

// nameThreads names every thread of the process. Executed through
// /proc/self/fd, the launcher would be called "4" in ps and top; the
// runtime has started threads by now, and later ones inherit the name
// of the thread that creates them.
func nameThreads(name string) {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		os.WriteFile("/proc/self/task/"+task.Name()+"/comm", []byte(name), 0)
	}
}

// ParseRights returns the descriptors of the SCM_RIGHTS messages in oob.
func ParseRights(oob []byte) ([]int, error) {
	messages, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range messages {
		rights, err := unix.ParseUnixRights(&m)
		if err != nil {
			return nil, err
		}
		fds = append(fds, rights...)
	}
	return fds, nil
}

func (l *launcherState) launch(id uint64, fds []int) {
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "launch")
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	attr := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
			syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
		// The sandbox dies with the launcher, which dies with the
		// worker.
		Pdeathsig: syscall.SIGKILL,
	}
	switch {
	case !l.config.InUserNamespace:
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = l.config.UIDMappings
		attr.GidMappings = l.config.GIDMappings
		attr.GidMappingsEnableSetgroups = l.config.SetgroupsAllowed
		if l.config.BecomeRoot {
			attr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
		}
	case l.config.SandboxUserNamespaces:
		// The launcher is already its namespace's root: the
		// sandbox's root is the same ids.
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = identityMaps(l.config.UIDMappings)
		attr.GidMappings = identityMaps(l.config.GIDMappings)
		attr.GidMappingsEnableSetgroups = l.config.SetgroupsAllowed
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{InitBinaryName},
		Env:         initEnvironment,
		Stdout:      files[0],
		Stderr:      files[1],
		ExtraFiles:  files[2:],
		SysProcAttr: attr,
	}
	if err := cmd.Start(); err != nil {
		l.send(LauncherMessage{Reply: &LaunchReply{ID: id, Error: err.Error()}}, -1)
		return
	}
	pid := cmd.Process.Pid
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		l.send(LauncherMessage{Reply: &LaunchReply{ID: id, Error: fmt.Sprintf("pidfd_open: %v", err)}}, -1)
		return
	}
	// The reply goes out before the exit notice can: the worker
	// registers the pid when it reads the reply.
	l.send(LauncherMessage{Reply: &LaunchReply{ID: id, PID: pid}}, pidfd)
	unix.Close(pidfd)
	go func() {
		cmd.Wait()
		notice := &ExitNotice{PID: pid}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
			notice.WaitStatus = uint32(ws)
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			notice.UserTimeNanos = ru.Utime.Nano()
			notice.SystemTimeNanos = ru.Stime.Nano()
			notice.MaxRSSBytes = ru.Maxrss * 1024
		}
		l.send(LauncherMessage{Exit: notice}, -1)
	}()
}

func (l *launcherState) send(message LauncherMessage, fd int) {
	data, _ := json.Marshal(message)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	if err := unix.Sendmsg(l.fd, data, oob, nil, 0); err != nil {
		// The worker is gone; so will this process be.
		os.Exit(0)
	}
}

// identityMaps maps the ids the launcher's namespace has to themselves.
func identityMaps(maps []IDMap) []syscall.SysProcIDMap {
	result := make([]syscall.SysProcIDMap, len(maps))
	for i, m := range maps {
		result[i] = syscall.SysProcIDMap{ContainerID: m.ContainerID, HostID: m.ContainerID, Size: m.Size}
	}
	return result
}
