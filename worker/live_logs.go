package worker

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"

	"github.com/bitzel/bitzel-worker/worker/livelogs"
)

// liveLogsKey carries, in an action's context, where the local executor
// offers its stdout and stderr while they grow: only serve's Execution
// service sets it (the cluster worker's logs are bb_scheduler's
// business), and without it the executor pays nothing.
type liveLogsKey struct{}

// LiveLogsOffer makes an action's two logs readable while they grow
// and returns what withdraws them, which the executor calls before the
// action's directory is given back.
type LiveLogsOffer func(stdout, stderr livelogs.Source) (withdraw func())

// WithLiveLogs returns ctx with offer, for the executor of the action
// to call with its logs.
func WithLiveLogs(ctx context.Context, offer LiveLogsOffer) context.Context {
	return context.WithValue(ctx, liveLogsKey{}, offer)
}

// LiveLogsFromContext returns the offer WithLiveLogs put in ctx.
func LiveLogsFromContext(ctx context.Context) (LiveLogsOffer, bool) {
	offer, ok := ctx.Value(liveLogsKey{}).(LiveLogsOffer)
	return offer, ok
}

// offerLiveLogs returns the writers the action's stdout and stderr go
// to: the buffers themselves, or, when the context offers live logs,
// wrappers that let readers follow them. close must be called before
// the action's directory is given back, so that no reader ever reads
// the log file of the next action to use it.
func offerLiveLogs(ctx context.Context, stdout, stderr *logBuffer) (io.Writer, io.Writer, func()) {
	offer, ok := LiveLogsFromContext(ctx)
	if !ok {
		return stdout, stderr, func() {}
	}
	liveStdout, liveStderr := newLiveLog(stdout), newLiveLog(stderr)
	withdraw := offer(liveStdout, liveStderr)
	return liveStdout, liveStderr, func() {
		withdraw()
		liveStdout.close()
		liveStderr.close()
	}
}

// liveLog lets readers follow a logBuffer while the action writes it:
// from its memory, or, once spilled, from its file through a read-only
// descriptor of its own.
type liveLog struct {
	mu      sync.RWMutex
	buffer  *logBuffer
	reader  *os.File
	size    int64
	done    bool
	changed chan struct{}
}

var _ livelogs.Source = (*liveLog)(nil)

func newLiveLog(buffer *logBuffer) *liveLog {
	return &liveLog{buffer: buffer, changed: make(chan struct{})}
}

var errLiveLogClosed = errors.New("the live log's file is closed: the action has ended")

func (l *liveLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.buffer.Write(p)
	l.size += int64(n)
	if l.buffer.spilled && l.reader == nil && !l.done {
		// A failure leaves readers at what memory held: they get
		// an error past it, and the whole log from the CAS.
		l.reader, _ = os.Open(l.buffer.path)
	}
	if n > 0 {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return n, err
}

func (l *liveLog) Snapshot() (int64, bool, <-chan struct{}) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.size, l.done, l.changed
}

// ReadAt holds the read lock throughout, so that close (and with it
// the end of the action) waits for reads in progress.
func (l *liveLog) ReadAt(p []byte, off int64) (int, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if off >= l.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), l.size-off)]
	if !l.buffer.spilled {
		return copy(p, l.buffer.mem.Bytes()[off:]), nil
	}
	if l.reader == nil {
		return 0, errLiveLogClosed
	}
	return l.reader.ReadAt(p, off)
}

// close marks the log complete. What memory holds stays readable (it is
// the action's own); a spilled log's file is not read any more.
func (l *liveLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	if l.reader != nil {
		l.reader.Close()
		l.reader = nil
	}
	close(l.changed)
	l.changed = make(chan struct{})
}
