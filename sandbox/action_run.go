package sandbox

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bitzel/bitzel-worker/sandbox/child"
)

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
	run := &actionRun{runner: r, spec: spec, released: make(chan struct{})}
	// The run's one cleanup, whichever way Run returns; it leaves alone
	// what handOff gave to the background reaper.
	defer run.close()
	if err := run.start(); err != nil {
		return nil, err
	}
	return run.supervise(ctx)
}

// actionRun is what one Run holds: the action's cgroup, its output
// files and the sandbox (PID 1 and its pipes) it runs in. The cgroup
// and the pipes outlive the action's report, until PID 1 is reaped;
// handOff gives them to a goroutine that releases them then, and close
// releases whatever was not handed off.
type actionRun struct {
	runner *namespaceRunner
	spec   *Spec
	action *child.Action

	cgroup         ActionCgroup
	stdout, stderr *cappedOutput
	sandbox        *preparedSandbox
	// copies drain the sandbox's stdout and stderr pipes into the
	// outputs.
	copies sync.WaitGroup
	// reaped: PID 1 has been waited for. handedOff: the reaper owns
	// the cgroup and the pipes.
	reaped, handedOff bool
	// released is the Result's Released, closed once both are gone.
	released chan struct{}
	// sendErr is why the Action could not be written to PID 1 (which
	// then sees the end of its config pipe and exits unreported).
	sendErr error
}

// start gets everything the action needs ready, up to a sandbox in the
// action's cgroup waiting for its Action.
func (a *actionRun) start() error {
	r := a.runner
	a.action = r.action(a.spec)
	if r.config.Cgroups != nil {
		cgroup, err := r.config.Cgroups.Create(fmt.Sprintf("action-%d-%d", os.Getpid(), r.sequence.Add(1)), a.spec.Limits)
		if err != nil {
			return fmt.Errorf("sandbox: create cgroup: %w", err)
		}
		a.cgroup = cgroup
	} else {
		a.action.MaxProcesses = uint64(a.spec.Limits.MaxProcesses)
	}
	var err error
	if a.stdout, err = newCappedOutput(a.spec.StdoutPath, a.spec.Stdout, a.spec.OutputLimitBytes); err != nil {
		return err
	}
	if a.stderr, err = newCappedOutput(a.spec.StderrPath, a.spec.Stderr, a.spec.OutputLimitBytes); err != nil {
		return err
	}
	if a.sandbox, err = r.takeSandbox(a.spec); err != nil {
		return err
	}
	if a.cgroup != nil {
		if err := a.cgroup.Join(a.sandbox.process.pid); err != nil {
			return fmt.Errorf("sandbox: join cgroup: %w", err)
		}
	}
	return nil
}

// supervise sends the Action, copies the output, enforces the timeout
// and the context, and turns what PID 1 reported into the Result.
func (a *actionRun) supervise(ctx context.Context) (*Result, error) {
	p := a.sandbox.pipes
	start := time.Now()
	a.copies.Add(2)
	go func() { defer a.copies.Done(); a.stdout.copyFrom(p.stdoutR) }()
	go func() { defer a.copies.Done(); a.stderr.copyFrom(p.stderrR) }()
	// A PID 1 that died meanwhile shows up as a missing status.
	a.sendErr = child.WriteAction(p.configW, a.action)
	p.configW.Close()

	w := watch(ctx, a.spec.Timeout, a.sandbox.process)
	report := a.awaitReport()
	w.stop()
	wall := time.Since(start)
	a.copies.Wait()
	return a.result(ctx, report, w, wall)
}

// handOff gives the cgroup and the pipes to a goroutine that releases
// them once PID 1 is reaped. PID 1's own exit (tearing down the
// namespaces, a few milliseconds of RCU grace periods) is then off the
// action's path; Close waits for it.
func (a *actionRun) handOff() {
	a.handedOff = true
	r := a.runner
	r.exiting.Add(1)
	go func() {
		defer r.exiting.Done()
		a.sandbox.process.wait()
		// release closes the output pipes' read ends: not before the
		// copies have drained them, or the end of the action's output
		// is lost when PID 1 is reaped first.
		a.copies.Wait()
		a.release()
		close(a.released)
	}()
}

// close ends the run: a PID 1 that was never sent its Action (joining
// the cgroup failed) is killed and reaped, and what handOff did not
// take is released.
func (a *actionRun) close() {
	if !a.handedOff {
		if a.sandbox != nil && !a.reaped {
			a.sandbox.process.kill()
			a.sandbox.process.wait()
			a.reaped = true
		}
		a.copies.Wait()
		a.release()
		close(a.released)
	}
	// The copies into the outputs are done: supervise waited for them.
	if a.stdout != nil {
		a.stdout.Close()
	}
	if a.stderr != nil {
		a.stderr.Close()
	}
}

// release removes the cgroup and closes the sandbox's pipes, once
// PID 1 and every process of the action are gone.
func (a *actionRun) release() {
	if a.cgroup != nil {
		a.cgroup.Remove()
	}
	if a.sandbox != nil {
		a.sandbox.pipes.closeAll()
	}
}

// watchdog kills PID 1 when the timeout expires or the context ends,
// which makes the kernel kill every process of its pid namespace,
// daemonised grandchildren included.
type watchdog struct {
	timedOut, cancelled atomic.Bool
	done                chan struct{}
}

func watch(ctx context.Context, timeout time.Duration, process *sandboxProcess) *watchdog {
	w := &watchdog{done: make(chan struct{})}
	go func() {
		var expired <-chan time.Time
		if timeout > 0 {
			timer := time.NewTimer(timeout)
			defer timer.Stop()
			expired = timer.C
		}
		select {
		case <-w.done:
			return
		case <-expired:
			w.timedOut.Store(true)
		case <-ctx.Done():
			w.cancelled.Store(true)
		}
		process.kill()
	}()
	return w
}

// stop ends the watch once the action is over.
func (w *watchdog) stop() { close(w.done) }
