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
	// The run's one cleanup, whichever way Run returns.
	defer run.close()
	if err := run.start(); err != nil {
		return nil, err
	}
	return run.supervise(ctx)
}

// actionRun is what one Run holds: the action's cgroup, its output
// files and the PID 1 it runs in, which goes back to the pool once the
// action is over, or is retired.
type actionRun struct {
	runner *namespaceRunner
	spec   *Spec
	action *child.Action

	cgroup         ActionCgroup
	stdout, stderr *cappedOutput
	zygote         *zygote
	// joined: PID 1 is in the action's cgroup. reaped: PID 1 died and
	// was waited for. done: PID 1 is back in the pool or retired.
	joined, reaped, done bool
	// released is the Result's Released.
	released chan struct{}
	// untouched: PID 1 was sent nothing (the Action could not be
	// encoded) and waits for an action as before.
	untouched bool
	// copies drain the action's stdout and stderr pipes into the
	// outputs.
	copies sync.WaitGroup
	// sendErr is why the action could not be handed to PID 1.
	sendErr error
}

// start gets everything the action needs ready, up to a PID 1 in the
// action's cgroup.
func (a *actionRun) start() error {
	r := a.runner
	a.action = r.action(a.spec)
	key := zygoteKey{}
	if r.config.Cgroups != nil {
		cgroup, err := r.config.Cgroups.Create(fmt.Sprintf("action-%d-%d", os.Getpid(), r.sequence.Add(1)), a.spec.Limits)
		if err != nil {
			return fmt.Errorf("sandbox: create cgroup: %w", err)
		}
		a.cgroup = cgroup
	} else {
		key.maxProcesses = uint64(a.spec.Limits.MaxProcesses)
	}
	var err error
	if a.stdout, err = newCappedOutput(a.spec.StdoutPath, a.spec.Stdout, a.spec.OutputLimitBytes); err != nil {
		return err
	}
	if a.stderr, err = newCappedOutput(a.spec.StderrPath, a.spec.Stderr, a.spec.OutputLimitBytes); err != nil {
		return err
	}
	if a.zygote, err = r.pool.take(key); err != nil {
		return err
	}
	if a.cgroup != nil {
		// Joined before it gets the action: every process of the
		// action starts in the cgroup, and PID 1 is accounted with
		// it as when it served a single action.
		a.joined = true
		if err := a.cgroup.Join(a.zygote.process.pid); err != nil {
			return fmt.Errorf("sandbox: join cgroup: %w", err)
		}
	}
	return nil
}

// supervise hands the action to PID 1, copies the output, enforces the
// timeout and the context, and turns what PID 1 reported into the
// Result.
func (a *actionRun) supervise(ctx context.Context) (*Result, error) {
	start := time.Now()
	outputs, err := a.startCopies()
	if err != nil {
		return nil, err
	}
	// The watchdog runs before the Action is written: a PID 1 still
	// building its template reads it only then, and one that hangs
	// there is killed like a command that does.
	w := watch(ctx, a.spec.Timeout, a.zygote.process)
	// A PID 1 that died meanwhile shows up as a missing status.
	sent, err := a.zygote.sendAction(a.action, outputs[0], outputs[1])
	outputs[0].Close()
	outputs[1].Close()
	if !sent {
		// Nothing was sent: PID 1 waits for an action as before.
		w.stop()
		a.untouched = true
		a.finish(false, !w.fired())
		return nil, fmt.Errorf("sandbox: send the action to init: %w", err)
	}
	a.sendErr = err
	report := a.awaitReport()
	w.stop()
	wall := time.Since(start)
	a.finish(report.reported, report.reported && !report.status.Retire && !w.fired())
	a.copies.Wait()
	return a.result(ctx, report, w, wall)
}

// startCopies makes the action's stdout and stderr pipes and copies
// what they carry into the outputs; it returns the write ends, which
// go to PID 1.
func (a *actionRun) startCopies() ([2]*os.File, error) {
	var writeEnds [2]*os.File
	for i, output := range []*cappedOutput{a.stdout, a.stderr} {
		r, w, err := os.Pipe()
		if err != nil {
			if i == 1 {
				writeEnds[0].Close()
			}
			return writeEnds, fmt.Errorf("sandbox: create output pipe: %w", err)
		}
		writeEnds[i] = w
		a.copies.Add(1)
		go func() {
			defer a.copies.Done()
			defer r.Close()
			output.copyFrom(r)
		}()
	}
	return writeEnds, nil
}

// finish gives PID 1 back to the pool, or retires it, and releases
// the cgroup; every process of the action is gone by then. reported:
// PID 1 sent a Status, and sends ReleasedMessage once the action's
// mounts are gone; reusable: it also asked for no retirement and was
// not killed (or was sent nothing: untouched). Result.Released is
// closed once no process and no mount of the action is left.
func (a *actionRun) finish(reported, reusable bool) {
	if a.done {
		return
	}
	a.done = true
	r, z := a.runner, a.zygote
	if reusable && a.joined {
		// Out of the action's cgroup before another action uses the
		// PID 1 or the cgroup.
		if err := a.cgroup.Leave(z.process.pid); err != nil {
			reusable = false
		}
	}
	if reusable && a.cgroup != nil {
		a.removeCgroup()
	}
	switch {
	case reusable && a.untouched:
		// Nothing was sent, nothing mounted: no Released follows.
		r.pool.put(z)
		close(a.released)
	case reusable && reported:
		r.background(func() {
			// Back in the pool before Released is closed: whoever
			// waits for it and goes on finds this PID 1 there.
			if awaitReleased(z.control) {
				r.pool.put(z)
			} else {
				r.end(z)
			}
			close(a.released)
		})
	default:
		r.background(func() {
			if !a.reaped {
				r.end(z)
			}
			close(a.released)
			// PID 1 is gone: nothing of the action is left in the
			// cgroup.
			if a.cgroup != nil {
				a.cgroup.Remove()
			}
		})
	}
}

// removeCgroup removes the action's cgroup, which PID 1 has left, in
// the background.
func (a *actionRun) removeCgroup() {
	cgroup := a.cgroup
	a.runner.background(func() { cgroup.Remove() })
}

// background runs f in a goroutine Close waits for.
func (r *namespaceRunner) background(f func()) {
	r.exiting.Add(1)
	go func() {
		defer r.exiting.Done()
		f()
	}()
}

// end kills a PID 1 and waits until it is reaped.
func (r *namespaceRunner) end(z *zygote) {
	z.close()
	z.process.kill()
	z.process.wait()
}

// retire ends a PID 1 that is not in use, in the background (Close
// waits for it).
func (r *namespaceRunner) retire(z *zygote) {
	r.background(func() { r.end(z) })
}

// close ends the run: a PID 1 that never got its action (joining the
// cgroup failed) is retired, and the outputs are closed.
func (a *actionRun) close() {
	if a.zygote != nil {
		a.finish(false, false)
	} else if a.cgroup != nil {
		a.cgroup.Remove()
	}
	a.copies.Wait()
	if a.stdout != nil {
		a.stdout.Close()
	}
	if a.stderr != nil {
		a.stderr.Close()
	}
}

// watchdog kills PID 1 when the timeout expires or the context ends,
// which makes the kernel kill every process of its pid namespace,
// daemonised grandchildren included. That PID 1 is then retired.
type watchdog struct {
	timedOut, cancelled atomic.Bool
	done, stopped       chan struct{}
}

func watch(ctx context.Context, timeout time.Duration, process *sandboxProcess) *watchdog {
	w := &watchdog{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(w.stopped)
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

// stop ends the watch once the action is over; after it returns, the
// watchdog kills nothing more.
func (w *watchdog) stop() {
	close(w.done)
	<-w.stopped
}

// fired: the watchdog killed PID 1.
func (w *watchdog) fired() bool { return w.timedOut.Load() || w.cancelled.Load() }
