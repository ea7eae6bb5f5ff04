package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/bitzel/bitzel-worker/sandbox/child"
	"golang.org/x/sys/unix"
)

// launcher is the worker's side of the sandbox launcher (see
// child/launcher.go for why it exists): a process started once that
// forks every sandbox's PID 1.
type launcher struct {
	initPath string
	config   child.LauncherConfig

	mu      sync.Mutex
	process *launcherProcess
}

// launcherProcess is one run of the launcher; a new one is started if
// it dies.
type launcherProcess struct {
	cmd    *exec.Cmd
	fd     int
	sendMu sync.Mutex
	nextID atomic.Uint64

	mu      sync.Mutex
	dead    error
	pending map[uint64]chan launchResult
	running map[int]*sandboxProcess
}

type launchResult struct {
	process *sandboxProcess
	err     error
}

// sandboxProcess is a PID 1 the launcher started.
type sandboxProcess struct {
	pid    int
	exited chan child.ExitNotice
	once   sync.Once

	mu    sync.Mutex
	pidfd int // -1 once closed
}

func newLauncher(initPath string, config child.LauncherConfig) *launcher {
	return &launcher{initPath: initPath, config: config}
}

// launch starts a sandbox's PID 1 with the given pipe ends.
func (l *launcher) launch(stdout, stderr, config, status *os.File) (*sandboxProcess, error) {
	p, err := l.running()
	if err != nil {
		return nil, err
	}
	return p.launch(stdout, stderr, config, status)
}

func (l *launcher) running() (*launcherProcess, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.process != nil {
		l.process.mu.Lock()
		dead := l.process.dead
		l.process.mu.Unlock()
		if dead == nil {
			return l.process, nil
		}
	}
	p, err := startLauncherProcess(l.initPath, l.config)
	if err != nil {
		return nil, err
	}
	l.process = p
	return p, nil
}

// close stops the launcher; sandboxes still running die with it.
func (l *launcher) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.process != nil {
		unix.Shutdown(l.process.fd, unix.SHUT_RDWR)
		l.process.cmd.Wait()
		unix.Close(l.process.fd)
		l.process = nil
	}
}

func startLauncherProcess(initPath string, config child.LauncherConfig) (*launcherProcess, error) {
	binary, err := os.OpenFile(initPath, os.O_RDONLY|unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: open launcher binary: %w", err)
	}
	defer binary.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: launcher socket: %w", err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "launcher")
	attr := &syscall.SysProcAttr{
		// The launcher, and through it every sandbox, dies with the
		// worker.
		Pdeathsig: syscall.SIGKILL,
	}
	if config.InUserNamespace {
		attr.Cloneflags = syscall.CLONE_NEWUSER
		attr.UidMappings = config.UIDMappings
		attr.GidMappings = config.GIDMappings
		attr.GidMappingsEnableSetgroups = config.SetgroupsAllowed
		if config.BecomeRoot {
			// Host root is not mapped: become the namespace's
			// root before exec, or exec drops every capability.
			attr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
		}
	}
	cmd := &exec.Cmd{
		Path:        fmt.Sprintf("/proc/self/fd/%d", child.LauncherBinaryFD),
		Args:        []string{"bitzel-sandbox-launcher"},
		Env:         []string{child.LauncherEnvMarker + "=1", "GOMAXPROCS=1"},
		Stderr:      os.Stderr,
		ExtraFiles:  []*os.File{theirs, binary},
		SysProcAttr: attr,
	}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("sandbox: start launcher %q: %w", initPath, err)
	}
	p := &launcherProcess{cmd: cmd, fd: fds[0], pending: map[uint64]chan launchResult{}, running: map[int]*sandboxProcess{}}
	data, _ := json.Marshal(config)
	if err := unix.Sendmsg(p.fd, data, nil, nil, 0); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		unix.Close(p.fd)
		return nil, fmt.Errorf("sandbox: configure launcher: %w", err)
	}
	go p.read()
	return p, nil
}

func (p *launcherProcess) launch(stdout, stderr, config, status *os.File) (*sandboxProcess, error) {
	id := p.nextID.Add(1)
	result := make(chan launchResult, 1)
	p.mu.Lock()
	if p.dead != nil {
		p.mu.Unlock()
		return nil, p.dead
	}
	p.pending[id] = result
	p.mu.Unlock()
	data, _ := json.Marshal(child.LaunchRequest{ID: id})
	rights := unix.UnixRights(int(stdout.Fd()), int(stderr.Fd()), int(config.Fd()), int(status.Fd()))
	p.sendMu.Lock()
	err := unix.Sendmsg(p.fd, data, rights, nil, 0)
	p.sendMu.Unlock()
	if err != nil {
		p.fail(fmt.Errorf("sandbox: launcher: %w", err))
	}
	r := <-result
	return r.process, r.err
}

// read dispatches the launcher's replies and exit notices until it
// goes away.
func (p *launcherProcess) read() {
	buf := make([]byte, 64*1024)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(p.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			p.fail(errors.New("sandbox: the launcher exited"))
			return
		}
		var message child.LauncherMessage
		if err := json.Unmarshal(buf[:n], &message); err != nil {
			p.fail(fmt.Errorf("sandbox: launcher: %w", err))
			return
		}
		switch {
		case message.Reply != nil:
			p.reply(message.Reply, oob[:oobn])
		case message.Exit != nil:
			p.mu.Lock()
			process := p.running[message.Exit.PID]
			delete(p.running, message.Exit.PID)
			p.mu.Unlock()
			if process != nil {
				process.exit(*message.Exit)
			}
		}
	}
}

func (p *launcherProcess) reply(reply *child.LaunchReply, oob []byte) {
	fds, _ := child.ParseRights(oob)
	p.mu.Lock()
	result := p.pending[reply.ID]
	delete(p.pending, reply.ID)
	var r launchResult
	if reply.Error != "" || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		r.err = fmt.Errorf("sandbox: start init: %s (are unprivileged user namespaces allowed?)", reply.Error)
	} else {
		// Registered before the exit notice, which follows the
		// reply on the socket, can be read.
		r.process = &sandboxProcess{pid: reply.PID, pidfd: fds[0], exited: make(chan child.ExitNotice, 1)}
		p.running[reply.PID] = r.process
	}
	p.mu.Unlock()
	if result != nil {
		result <- r
	} else if r.process != nil {
		r.process.kill()
	}
}

// fail ends every request and sandbox of a launcher that went away. Its
// sandboxes died with it.
func (p *launcherProcess) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead != nil {
		return
	}
	p.dead = err
	for id, result := range p.pending {
		result <- launchResult{err: err}
		delete(p.pending, id)
	}
	for pid, process := range p.running {
		process.exit(child.ExitNotice{PID: pid, WaitStatus: uint32(syscall.SIGKILL)})
		delete(p.running, pid)
	}
}

func (s *sandboxProcess) exit(notice child.ExitNotice) {
	s.once.Do(func() {
		s.exited <- notice
		close(s.exited)
	})
}

// kill ends the sandbox's PID 1, and with it its pid namespace. A pidfd
// cannot hit a recycled pid.
func (s *sandboxProcess) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pidfd >= 0 {
		unix.PidfdSendSignal(s.pidfd, unix.SIGKILL, nil, 0)
	}
}

// wait returns once the launcher has reaped PID 1. It may be called
// once.
func (s *sandboxProcess) wait() child.ExitNotice {
	notice, ok := <-s.exited
	s.mu.Lock()
	if s.pidfd >= 0 {
		unix.Close(s.pidfd)
		s.pidfd = -1
	}
	s.mu.Unlock()
	if !ok {
		return child.ExitNotice{PID: s.pid, WaitStatus: uint32(syscall.SIGKILL)}
	}
	return notice
}
