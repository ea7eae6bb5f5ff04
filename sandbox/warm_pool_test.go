package sandbox

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/sandbox/child"
)

// fakeStarter starts sandboxes without namespaces: real pipes and a
// PID 1 that has already exited, so that discard can run.
type fakeStarter struct {
	mu      sync.Mutex
	started []*preparedSandbox
	err     error
	closed  bool
	// starts receives the number of each sandbox as it is started.
	starts chan int
}

func newFakeStarter() *fakeStarter { return &fakeStarter{starts: make(chan int, 100)} }

func (f *fakeStarter) start() (*preparedSandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	p, err := newPipes()
	if err != nil {
		return nil, err
	}
	n := len(f.started) + 1
	process := &sandboxProcess{pid: n, pidfd: -1, exited: make(chan child.ExitNotice, 1)}
	process.exit(child.ExitNotice{PID: n})
	s := &preparedSandbox{process: process, pipes: p}
	f.started = append(f.started, s)
	f.starts <- n
	return s, nil
}

func (f *fakeStarter) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
}

func (f *fakeStarter) sandboxes() []*preparedSandbox {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*preparedSandbox(nil), f.started...)
}

// discarded: discard closed the sandbox's end of its config pipe, the
// EOF that makes a waiting PID 1 exit.
func discarded(s *preparedSandbox) bool {
	_, err := s.pipes.configW.Write([]byte{'\n'})
	return errors.Is(err, os.ErrClosed)
}

func waitForStarts(t *testing.T, f *fakeStarter, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-f.starts:
		case <-time.After(10 * time.Second):
			t.Fatalf("the pool started %d sandboxes, not %d, without being asked", i, n)
		}
	}
}

// TestWarmPoolHandsOutSandboxesStartedAheadOfNeed: a pool of two keeps
// two sandboxes ready (and a third started, waiting for room), hands
// out the oldest, and on close discards every sandbox nobody took and
// closes its base; the one handed out is its taker's.
func TestWarmPoolHandsOutSandboxesStartedAheadOfNeed(t *testing.T) {
	base := newFakeStarter()
	pool := newWarmPool(base, 2, time.Hour)
	waitForStarts(t, base, 3)
	taken, err := pool.start()
	if err != nil {
		t.Fatal(err)
	}
	defer taken.pipes.closeAll()
	if taken.process.pid != 1 {
		t.Errorf("the pool handed out sandbox %d, not the first it started", taken.process.pid)
	}
	// The taken place is filled again.
	waitForStarts(t, base, 1)
	pool.close()
	for _, s := range base.sandboxes() {
		if s == taken {
			if discarded(s) {
				t.Error("close discarded the sandbox the pool had handed out")
			}
		} else if !discarded(s) {
			t.Errorf("sandbox %d, never handed out, was not discarded by close", s.process.pid)
		}
	}
	if !base.closed {
		t.Error("close did not close the pool's base")
	}
	// After close a Run still gets a sandbox, from the base.
	before := len(base.sandboxes())
	late, err := pool.start()
	if err != nil {
		t.Fatal(err)
	}
	defer late.pipes.closeAll()
	if n := len(base.sandboxes()); n != before+1 || discarded(late) {
		t.Errorf("a start after close: %d sandboxes started (was %d), discarded %v", n, before, discarded(late))
	}
}

// TestWarmPoolPassesOnItsBasesError: with nothing warm, the pool asks
// its base at once and returns its error, and a filler waiting to
// retry does not hold up close.
func TestWarmPoolPassesOnItsBasesError(t *testing.T) {
	base := newFakeStarter()
	base.err = errors.New("no user namespaces")
	pool := newWarmPool(base, 1, time.Hour)
	if s, err := pool.start(); err != base.err {
		t.Errorf("start with a failing base: %v, %v", s, err)
	}
	closed := make(chan struct{})
	go func() { pool.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("close waited for the filler's retry")
	}
}
