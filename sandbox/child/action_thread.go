package child

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// actionThread is the thread that starts PID 1's next action. It is
// made while PID 1 waits for that action, and does then what does not
// depend on it: new mount, IPC and UTS namespaces (the network
// namespace is the slot's: network.go), hostname, a fresh session
// keyring, no_new_privs. What does
// depend on the action (its mounts, then the capabilities and the
// seccomp filter, which forbid mounting) waits for it. A trivial
// action's critical path is then its own mounts and its command.
//
// The thread is locked to its goroutine for good: Go ends it with the
// goroutine, and with it the action's namespaces, filter and
// credentials, which no other goroutine may inherit. The Go runtime
// creates no other thread from a locked one.
type actionThread struct {
	// tid, mountNS and err are the thread's to write; PID 1 reads
	// them once it has received from done.
	tid int
	// mountNS is a descriptor of the thread's mount namespace, which
	// PID 1 holds until it has reported the action (release).
	mountNS int
	// err is why the preparation failed, reported with the action.
	err  error
	work chan actionWork
	done chan spawnResult
}

type actionWork struct {
	action *Action
	files  actionFiles
}

// spawnResult is what an action's thread hands back: the pid of the
// command it started, or the Status of an action that did not start.
type spawnResult struct {
	pid    int
	status *Status
}

// startActionThread starts the next action's thread.
func (z *zygote) startActionThread() *actionThread {
	t := &actionThread{mountNS: -1, work: make(chan actionWork, 1), done: make(chan spawnResult, 1)}
	go func() {
		runtime.LockOSThread()
		t.tid = unix.Gettid()
		t.err = t.prepare(z.prepare)
		w := <-t.work
		t.done <- t.start(z.prepare, w.action, w.files)
	}()
	return t
}

func (t *actionThread) prepare(prepare *Prepare) error {
	if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	mountNS, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("hold the action's mount namespace: %w", err)
	}
	t.mountNS = mountNS
	return prepareIsolation(prepare)
}

// run hands the action to the thread and returns what it started.
func (t *actionThread) run(action *Action, files actionFiles) spawnResult {
	t.work <- actionWork{action: action, files: files}
	return <-t.done
}

// start mounts the action's root, finishes isolating the thread and
// starts the command from it, which inherits all of that.
func (t *actionThread) start(prepare *Prepare, action *Action, files actionFiles) spawnResult {
	if t.err != nil {
		return spawnResult{status: failure("namespaces", t.err)}
	}
	execRoot, err := mountActionRoot(prepare, action)
	if err != nil {
		return spawnResult{status: failure("mount", err)}
	}
	if err := isolateAction(prepare); err != nil {
		return spawnResult{status: failure("isolate", err)}
	}
	pid, status := startCommand(execRoot, action, files)
	return spawnResult{pid: pid, status: status}
}
