package sandbox

import (
	"sync"
	"time"
)

// zygotePool keeps the PID 1s that are between actions, so that an
// action's sandbox costs its own namespaces and mounts only, not a new
// PID 1 (a process start, six namespaces, the template's mounts). It
// starts one when none is idle.
type zygotePool struct {
	start func(zygoteKey) (*zygote, error)
	// retire ends a PID 1 the pool does not keep.
	retire func(*zygote)
	// maxIdle bounds the PID 1s kept between actions.
	maxIdle int
	// maxAge bounds how long a PID 1 serves. Its host views are
	// overlays made when it started, and overlayfs does not notice
	// a file the host replaced below it since (an upgraded package):
	// a new PID 1 sees the host as it is now.
	maxAge time.Duration

	mu     sync.Mutex
	idle   []*zygote
	closed bool
	// warming is done once the PID 1s started ahead of need are in.
	warming sync.WaitGroup
}

// zygoteMaxAge is how stale a PID 1's view of the host may be.
const zygoteMaxAge = time.Minute

// take hands out an idle PID 1 prepared with key, the most recently
// used first (its pages are warmest), or starts one.
func (p *zygotePool) take(key zygoteKey) (*zygote, error) {
	p.mu.Lock()
	var found *zygote
	for i := len(p.idle) - 1; i >= 0; i-- {
		z := p.idle[i]
		if z.key != key {
			continue
		}
		p.idle = append(p.idle[:i], p.idle[i+1:]...)
		if time.Since(z.started) > p.maxAge {
			defer p.retire(z)
			continue
		}
		found = z
		break
	}
	p.mu.Unlock()
	if found != nil {
		return found, nil
	}
	return p.start(key)
}

// put takes back a PID 1 that finished an action and may take another.
func (p *zygotePool) put(z *zygote) {
	p.mu.Lock()
	keep := !p.closed && len(p.idle) < p.maxIdle && time.Since(z.started) <= p.maxAge
	if keep {
		p.idle = append(p.idle, z)
	}
	p.mu.Unlock()
	if !keep {
		p.retire(z)
	}
}

// warm starts n PID 1s ahead of need, in the background.
func (p *zygotePool) warm(n int, key zygoteKey) {
	p.warming.Add(1)
	go func() {
		defer p.warming.Done()
		for range n {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			z, err := p.start(key)
			if err != nil {
				// Run reports the error, from a start of its own.
				return
			}
			p.put(z)
		}
	}()
}

// close retires the idle PID 1s; those in use are retired as their
// actions end.
func (p *zygotePool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.warming.Wait()
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, z := range idle {
		p.retire(z)
	}
}
