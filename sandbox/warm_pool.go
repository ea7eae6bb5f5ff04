package sandbox

import (
	"time"

	"github.com/bitzel/bitzel-worker/sandbox/child"
)

// preparedSandbox is a started PID 1 that has been sent its Prepare
// message (and has done that phase, or is doing it) and waits for an
// Action.
type preparedSandbox struct {
	process *sandboxProcess
	pipes   *pipes
}

// discard ends a prepared sandbox that will get no action: EOF on its
// config pipe makes PID 1 exit quietly.
func (s *preparedSandbox) discard() {
	s.pipes.configW.Close()
	s.process.wait()
	s.pipes.closeAll()
}

// sandboxStarter hands out prepared sandboxes, each to one Run, which
// then owns it. The warm pool is a decorator of it.
type sandboxStarter interface {
	start() (*preparedSandbox, error)
	// close ends what the starter keeps for later; it may still be
	// asked to start sandboxes afterwards (by Runs that Close is
	// ending), and must not keep them.
	close()
}

// launcherStarter has the launcher start each sandbox when it is asked
// for one.
type launcherStarter struct {
	launcher *launcher
	prepare  *child.Prepare
}

// start has the launcher start a PID 1 in new namespaces and sends it
// the Prepare message; it does not wait for the preparation.
func (s *launcherStarter) start() (*preparedSandbox, error) {
	p, err := newPipes()
	if err != nil {
		return nil, err
	}
	process, err := s.launcher.launch(p.stdoutW, p.stderrW, p.configR, p.statusW)
	if err != nil {
		p.closeAll()
		return nil, err
	}
	p.closeChildEnds()
	// The pipe buffer holds the message whether or not PID 1 reads it
	// yet; a PID 1 that died shows up as a missing status later.
	child.WritePrepare(p.configW, s.prepare)
	return &preparedSandbox{process: process, pipes: p}, nil
}

func (*launcherStarter) close() {}

// warmPool keeps sandboxes of another starter started ahead of need,
// so that an action's critical path starts at its own mounts rather
// than at clone(): namespace creation, the init's start-up and the
// shared mounts cost more than the action's part of the sandbox.
type warmPool struct {
	base    sandboxStarter
	ready   chan *preparedSandbox
	closing chan struct{}
	// filled is closed once the filler has stopped.
	filled chan struct{}
	retry  time.Duration
}

// warmPoolRetry is how long the filler waits after its base failed to
// start a sandbox, rather than spinning; Run reports the error, from a
// start of its own.
const warmPoolRetry = time.Second

// newWarmPool starts filling a pool of size sandboxes from base,
// retrying a failed start after retry.
func newWarmPool(base sandboxStarter, size int, retry time.Duration) *warmPool {
	p := &warmPool{
		base:    base,
		ready:   make(chan *preparedSandbox, size),
		closing: make(chan struct{}),
		filled:  make(chan struct{}),
		retry:   retry,
	}
	go p.fill()
	return p
}

func (p *warmPool) fill() {
	defer close(p.filled)
	for {
		s, err := p.base.start()
		if err != nil {
			select {
			case <-p.closing:
				return
			case <-time.After(p.retry):
				continue
			}
		}
		select {
		case p.ready <- s:
		case <-p.closing:
			s.discard()
			return
		}
	}
}

// start hands out a warm sandbox, or starts one when none is ready.
func (p *warmPool) start() (*preparedSandbox, error) {
	select {
	case s := <-p.ready:
		return s, nil
	default:
		return p.base.start()
	}
}

// close stops the filler and discards the sandboxes nobody took.
func (p *warmPool) close() {
	close(p.closing)
	<-p.filled
	for {
		select {
		case s := <-p.ready:
			s.discard()
			continue
		default:
		}
		break
	}
	p.base.close()
}

// takeSandbox is the prepared sandbox for spec.
func (r *namespaceRunner) takeSandbox(spec *Spec) (*preparedSandbox, error) {
	if spec.ExecRootIsRoot && r.wholeRoot != nil {
		return r.wholeRoot.start()
	}
	return r.sandboxes.start()
}
