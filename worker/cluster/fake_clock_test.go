package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/buildbarn/bb-storage/pkg/clock"
)

// realTimeLimit bounds every wait of a test for something the code
// under test does in the background. It is a failure deadline, never a
// pause: tests move on as soon as the awaited event happens.
const realTimeLimit = 20 * time.Second

// fakeClock is a clock.Clock whose time moves only when a test calls
// advance. Tests see the timers the code is waiting on and can fire
// them, so that every delay the code chooses is asserted exactly and no
// test sleeps.
type fakeClock struct {
	lock     sync.Mutex
	now      time.Time
	timers   []*fakeTimer
	contexts []*fakeDeadline
	// changed is closed and replaced whenever a timer is added.
	changed chan struct{}
}

type fakeTimer struct {
	clock    *fakeClock
	deadline time.Time
	duration time.Duration
	channel  chan time.Time
}

type fakeDeadline struct {
	deadline time.Time
	cancel   context.CancelFunc
}

var _ clock.Clock = (*fakeClock)(nil)

func newFakeClock() *fakeClock {
	return &fakeClock{
		now:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		changed: make(chan struct{}),
	}
}

func (c *fakeClock) Now() time.Time {
	c.lock.Lock()
	defer c.lock.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) (clock.Timer, <-chan time.Time) {
	c.lock.Lock()
	defer c.lock.Unlock()
	t := &fakeTimer{clock: c, deadline: c.now.Add(d), duration: d, channel: make(chan time.Time, 1)}
	if d <= 0 {
		t.channel <- c.now
		return t, t.channel
	}
	c.timers = append(c.timers, t)
	close(c.changed)
	c.changed = make(chan struct{})
	return t, t.channel
}

func (t *fakeTimer) Stop() bool {
	c := t.clock
	c.lock.Lock()
	defer c.lock.Unlock()
	for i, pending := range c.timers {
		if pending == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// NewContextWithTimeout cancels the context when fake time reaches the
// deadline.
func (c *fakeClock) NewContextWithTimeout(parent context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	c.lock.Lock()
	defer c.lock.Unlock()
	c.contexts = append(c.contexts, &fakeDeadline{deadline: c.now.Add(timeout), cancel: cancel})
	return ctx, cancel
}

func (c *fakeClock) NewTicker(d time.Duration) (clock.Ticker, <-chan time.Time) {
	panic("the cluster client is not expected to use tickers")
}

// advance moves time forward and fires what fell due.
func (c *fakeClock) advance(d time.Duration) {
	c.lock.Lock()
	defer c.lock.Unlock()
	c.now = c.now.Add(d)
	remaining := c.timers[:0]
	for _, t := range c.timers {
		if t.deadline.After(c.now) {
			remaining = append(remaining, t)
		} else {
			t.channel <- c.now
		}
	}
	c.timers = remaining
	contexts := c.contexts[:0]
	for _, d := range c.contexts {
		if d.deadline.After(c.now) {
			contexts = append(contexts, d)
		} else {
			d.cancel()
		}
	}
	c.contexts = contexts
}

// pendingTimers returns the durations of the timers not yet fired or
// stopped, in creation order.
func (c *fakeClock) pendingTimers() []time.Duration {
	c.lock.Lock()
	defer c.lock.Unlock()
	durations := make([]time.Duration, 0, len(c.timers))
	for _, t := range c.timers {
		durations = append(durations, t.duration)
	}
	return durations
}

// waitForTimer waits until a timer is pending and returns the time
// left until the earliest one fires.
func (c *fakeClock) waitForTimer(t *testing.T) time.Duration {
	t.Helper()
	left, _ := c.waitForTimerOr(t, nil)
	return left
}

// waitForTimerOr is waitForTimer that also returns, with ok false, as
// soon as done reports true; done is re-evaluated whenever one of its
// channels closes.
func (c *fakeClock) waitForTimerOr(t *testing.T, done func() (bool, <-chan struct{})) (left time.Duration, ok bool) {
	t.Helper()
	limit := time.NewTimer(realTimeLimit)
	defer limit.Stop()
	for {
		var doneChanged <-chan struct{}
		if done != nil {
			var isDone bool
			if isDone, doneChanged = done(); isDone {
				return 0, false
			}
		}
		c.lock.Lock()
		changed := c.changed
		if len(c.timers) > 0 {
			earliest := c.timers[0].deadline
			for _, timer := range c.timers[1:] {
				if timer.deadline.Before(earliest) {
					earliest = timer.deadline
				}
			}
			left := earliest.Sub(c.now)
			c.lock.Unlock()
			return left, true
		}
		c.lock.Unlock()
		select {
		case <-changed:
		case <-doneChanged:
		case <-limit.C:
			t.Fatal("no timer was started")
		}
	}
}

// waitForTimerOf waits for a pending timer of exactly duration d, as
// the code under test started it.
func (c *fakeClock) waitForTimerOf(t *testing.T, d time.Duration) {
	t.Helper()
	limit := time.NewTimer(realTimeLimit)
	defer limit.Stop()
	for {
		c.lock.Lock()
		changed := c.changed
		for _, timer := range c.timers {
			if timer.duration == d {
				c.lock.Unlock()
				return
			}
		}
		c.lock.Unlock()
		select {
		case <-changed:
		case <-limit.C:
			t.Fatalf("no timer of %s was started; pending: %v", d, c.pendingTimers())
		}
	}
}
