package child

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// A sandbox's PID 1 serves one action after another: the actions of
// one slot of the worker, never two at once. What the actions share is
// built once (the template root, the user namespace's limits, PID 1's
// own start-up); what one action could change for the next is made
// anew for each (mount, IPC and UTS namespaces, by the action's thread:
// action_thread.go), killed (every process but PID 1), cleaned (the
// network namespace's sockets: network.go) or checked (PID 1's own
// attributes: health.go). A PID 1 that cannot vouch for its state
// retires instead of taking another action.

// serve reads the Prepare, builds the template and runs Actions until
// the config pipe ends.
func serve() {
	// Inherited descriptors lose close-on-exec; no command may see
	// the config pipe or the control socket.
	unix.CloseOnExec(ConfigFD)
	unix.CloseOnExec(ControlFD)
	// Not dumpable: a command of the same uid cannot read PID 1's
	// memory or descriptors through /proc/1, nor ptrace it.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	config := bufio.NewReader(os.NewFile(ConfigFD, "config"))
	z := &zygote{}
	prepare, err := ReadPrepare(config)
	if err != nil {
		z.failEveryAction(config, failure("config", fmt.Errorf("read prepare: %w", err)))
		return
	}
	z.prepare = prepare
	catchSignals()
	if err := buildTemplate(prepare); err != nil {
		z.failEveryAction(config, failure("prepare", err))
		return
	}
	if err := prepareSlot(prepare); err != nil {
		z.failEveryAction(config, failure("prepare", err))
		return
	}
	if z.baseline, err = readHealth(); err != nil {
		z.failEveryAction(config, failure("prepare", err))
		return
	}
	z.next = z.startActionThread()
	for {
		action, err := ReadAction(config)
		if errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			report(failure("config", fmt.Errorf("read action: %w", err)))
			return
		}
		files, err := receiveActionFiles()
		if err != nil {
			report(failure("config", err))
			return
		}
		status, mountNS := z.run(action, files)
		if len(z.prepare.SeccompFilter) == 0 {
			// Without the filter an action may put keys in the
			// user keyrings of the slot's user namespace, which
			// outlive it: the next action gets a new namespace.
			status.Retire = true
		}
		if !status.Retire {
			if err := z.baseline.check(); err != nil {
				status.Retire = true
			}
		}
		if !status.Retire && networkIsEmpty() != nil {
			// Sockets outlived the action's processes: the
			// next action gets a new network namespace.
			status.Retire = true
		}
		if !report(status) {
			return
		}
		if !status.Retire {
			// Made while the last action's mounts are released.
			z.next = z.startActionThread()
		}
		if !release(mountNS) || status.Retire {
			return
		}
	}
}

type zygote struct {
	prepare  *Prepare
	baseline *health
	// next is the thread that starts the next action.
	next *actionThread
}

// failEveryAction reports a PID 1 that cannot serve: to the first
// Action, if the worker sends one (it has no other reader of a
// report), then it exits.
func (z *zygote) failEveryAction(config *bufio.Reader, status *Status) {
	if _, err := ReadAction(config); errors.Is(err, io.EOF) {
		return
	}
	receiveActionFiles()
	report(status)
}

// actionFiles are an action's stdout and stderr, PID 1's copies.
type actionFiles struct{ stdout, stderr int }

func (f actionFiles) close() {
	unix.Close(f.stdout)
	unix.Close(f.stderr)
}

// receiveActionFiles reads the message that carries an action's
// stdout and stderr.
func receiveActionFiles() (actionFiles, error) {
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4*ActionFiles))
	for {
		n, oobn, _, _, err := unix.Recvmsg(ControlFD, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return actionFiles{}, fmt.Errorf("receive the action's stdout and stderr: %w", err)
		}
		fds, perr := ParseRights(oob[:oobn])
		if n != 1 || buf[0] != ActionFilesMessage || perr != nil || len(fds) != ActionFiles {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return actionFiles{}, fmt.Errorf("malformed action files message (%d bytes, %d descriptors)", n, len(fds))
		}
		return actionFiles{stdout: fds[0], stderr: fds[1]}, nil
	}
}

// run runs one action: its thread builds the action's namespaces and
// starts the command; PID 1 reaps every process of it and waits for
// the thread to be gone. It returns the Status and PID 1's descriptor
// of the action's mount namespace (-1 if none), the last reference to
// it: release unmounts the action's tree.
func (z *zygote) run(action *Action, files actionFiles) (*Status, int) {
	start := time.Now()
	if len(action.Mounts) == 0 || len(action.Argv) == 0 {
		files.close()
		return failure("config", errors.New("action has no exec root overlay or no command")), -1
	}
	thread := z.next
	z.next = nil
	r := thread.run(action, files)
	// The command has its own copies, and the worker sees the end of
	// its output once every process of the action is gone.
	files.close()
	if r.status != nil {
		r.status.Retire = !awaitThreadExit(thread.tid)
		return r.status, thread.mountNS
	}
	setup := time.Since(start)
	status := reap(r.pid)
	status.SetupNanos = setup.Nanoseconds()
	status.Retire = !awaitThreadExit(thread.tid)
	return status, thread.mountNS
}

// release drops PID 1's reference to an action's mount namespace,
// which unmounts what is left of the action's tree (its overlays, its
// tmpfs mounts, the template's copy), then tells the worker, which may
// then use the overlays' upper and work directories for another
// action (sandbox.Result.Released). Unmounting waits for an RCU grace
// period, a millisecond or more: done by the action's last process,
// as it would be without this reference, it held up its exit and the
// report. It returns false when the worker is gone.
func release(mountNS int) bool {
	if mountNS >= 0 {
		unix.Close(mountNS)
	}
	return send([]byte{ReleasedMessage})
}

// awaitThreadExit waits for an action's thread to have exited: its
// exit drops what it held of the action's mount namespace (the
// overlays). It reports false if the thread is still there after a
// second, which would leave the action's overlays mounted: PID 1 then
// retires, and its death unmounts them.
func awaitThreadExit(tid int) bool {
	path := "/proc/self/task/" + strconv.Itoa(tid)
	return waitUntil(time.Second, func() bool {
		var st unix.Stat_t
		return errors.Is(unix.Stat(path, &st), unix.ENOENT)
	})
}

// waitUntil calls done, with pauses growing from 20 us to 10 ms, until
// it returns true (waitUntil then does) or limit has passed (false).
// What PID 1 waits for after an action (its thread's exit, the kernel
// closing the last sockets) is nearly always done at the first call.
func waitUntil(limit time.Duration, done func() bool) bool {
	deadline := time.Now().Add(limit)
	for delay := 20 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		if done() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay)
	}
}

// report sends status over the control socket; false when the worker
// is gone.
func report(status *Status) bool {
	return send(EncodeStatus(status))
}

// send sends one message over the control socket; false when the
// worker is gone.
func send(message []byte) bool {
	for {
		err := unix.Sendmsg(ControlFD, message, nil, nil, 0)
		if err != unix.EINTR {
			return err == nil
		}
	}
}
