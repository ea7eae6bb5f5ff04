package sandbox

import (
	"fmt"
	"os"
	"time"

	"github.com/bitzel/bitzel-worker/sandbox/child"
	"golang.org/x/sys/unix"
)

// zygote is a started PID 1 that serves one action after another
// (child/zygote.go), with the worker's ends of its config pipe and
// control socket. A Run holds it for one action; between actions it
// waits in the runner's pool.
type zygote struct {
	process *sandboxProcess
	// configW carries the Prepare, then one Action per action.
	configW *os.File
	// control sends each action's stdout and stderr and receives its
	// disk-budget tmpfs and Status.
	control *os.File
	key     zygoteKey
	started time.Time
}

// zygoteKey is what a PID 1 is prepared with that differs between
// actions: a slot serves only actions that agree on it.
type zygoteKey struct {
	// maxProcesses is PID 1's RLIMIT_NPROC, without a pids cgroup
	// (it cannot be raised again once lowered).
	maxProcesses uint64
}

// startZygote has the launcher start a PID 1 in new namespaces and
// sends it its Prepare; it does not wait for the preparation (the
// first Action waits behind it in the pipe).
func startZygote(l *launcher, prepare *child.Prepare, devNull *os.File) (*zygote, error) {
	configR, configW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: create config pipe: %w", err)
	}
	defer configR.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		configW.Close()
		return nil, fmt.Errorf("sandbox: create control socket: %w", err)
	}
	control, theirs := os.NewFile(uintptr(fds[0]), "control"), os.NewFile(uintptr(fds[1]), "control")
	defer theirs.Close()
	// PID 1's own stderr is the worker's: what it prints is a crash
	// of the sandbox, for the operator. Actions get pipes of their own.
	process, err := l.launch(devNull, os.Stderr, configR, theirs)
	if err != nil {
		configW.Close()
		control.Close()
		return nil, err
	}
	// The pipe buffer holds the message whether or not PID 1 reads it
	// yet; a PID 1 that died shows up as a missing status later.
	child.WritePrepare(configW, prepare)
	return &zygote{process: process, configW: configW, control: control, key: zygoteKey{maxProcesses: prepare.MaxProcesses}, started: time.Now()}, nil
}

// sendAction hands PID 1 an action: its stdout and stderr over the
// control socket, then the Action. An Action that cannot be encoded
// (too large) is refused before anything is sent: PID 1 then still
// waits for its next action, as if nothing happened.
func (z *zygote) sendAction(action *child.Action, stdout, stderr *os.File) (sent bool, err error) {
	frame, err := child.EncodeAction(action)
	if err != nil {
		return false, err
	}
	rights := unix.UnixRights(int(stdout.Fd()), int(stderr.Fd()))
	if err := unix.Sendmsg(int(z.control.Fd()), []byte{child.ActionFilesMessage}, rights, nil, 0); err != nil {
		return true, fmt.Errorf("send the action's stdout and stderr: %w", err)
	}
	_, err = z.configW.Write(frame)
	return true, err
}

// close ends the worker's side: a waiting PID 1 sees the end of its
// config pipe and exits.
func (z *zygote) close() {
	z.configW.Close()
	z.control.Close()
}
