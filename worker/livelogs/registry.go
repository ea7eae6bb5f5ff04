package livelogs

import (
	"io"
	"sync"
)

// Source is a log being written. ReadAt reads from what has been
// written so far (it may return fewer bytes than asked); Snapshot
// returns how much that is, whether the log is complete, and a channel
// that is closed at the next write or at completion.
type Source interface {
	io.ReaderAt
	Snapshot() (size int64, done bool, changed <-chan struct{})
}

// Registry holds the live logs that can be read now, by resource name.
type Registry struct {
	mu   sync.Mutex
	logs map[string]entry
}

type entry struct {
	source Source
	owner  string
}

// NewRegistry creates an empty Registry.
func NewRegistry() *Registry {
	return &Registry{logs: map[string]entry{}}
}

// Add makes source readable under name by owner (a ClientIdentity)
// until remove is called.
func (r *Registry) Add(name, owner string, source Source) (remove func()) {
	r.mu.Lock()
	r.logs[name] = entry{source: source, owner: owner}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.logs, name)
		r.mu.Unlock()
	}
}

func (r *Registry) lookup(name string) (entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.logs[name]
	return e, ok
}

// Len is the number of live logs readable now.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.logs)
}
