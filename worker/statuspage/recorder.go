package statuspage

import (
	"sort"
	"sync"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/worker"
)

// DefaultRecentActions is how many completed actions the page keeps.
const DefaultRecentActions = 1000

// Recorder keeps the running actions, a bounded ring of recent ones and
// an hour of per-interval statistics. It is the worker.ActionRecorder
// every executor of the process reports to.
type Recorder struct {
	now func() time.Time

	mu      sync.Mutex
	nextID  uint64
	running map[uint64]*Record
	recent  *ring
	series  *series
}

var _ worker.ActionRecorder = (*Recorder)(nil)

// NewRecorder keeps the last size completed actions (at least one).
func NewRecorder(size int) *Recorder {
	return newRecorderWithClock(size, time.Now)
}

func newRecorderWithClock(size int, now func() time.Time) *Recorder {
	return &Recorder{
		now:     now,
		running: map[uint64]*Record{},
		recent:  newRing(size),
		series:  newSeries(now()),
	}
}

type recording struct {
	recorder *Recorder
	record   *Record
}

// ActionStarted implements worker.ActionRecorder.
func (r *Recorder) ActionStarted(request *worker.Request) worker.ActionRecording {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextID++
	record := newRecord(r.nextID, request, now)
	r.running[record.ID] = record
	return &recording{recorder: r, record: record}
}

func (x *recording) StageChanged(stage worker.Stage) {
	now := x.recorder.now()
	x.recorder.mu.Lock()
	x.record.stage, x.record.stageSince = stage, now
	x.recorder.mu.Unlock()
}

func (x *recording) InputLayersPlaced(placed []layers.LayerUse) {
	// A copy: the record outlives the executor's InputRoot.
	kept := append([]layers.LayerUse(nil), placed[:min(len(placed), maximumLayersKept)]...)
	x.recorder.mu.Lock()
	x.record.Layers, x.record.LayerCount = kept, len(placed)
	x.recorder.mu.Unlock()
}

func (x *recording) ActionCompleted(response *remoteexecution.ExecuteResponse) {
	now := x.recorder.now()
	// Summarised outside the lock: it walks the output lists.
	completed := *x.record
	completed.complete(response, now)
	r := x.recorder
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, x.record.ID)
	r.recent.add(&completed)
	r.series.add(&completed, now)
}

// Running is an action in progress as the page shows it.
type Running struct {
	*Record
	Stage        worker.Stage
	StageElapsed time.Duration
	Elapsed      time.Duration
}

// Snapshot is a consistent view of the recorder.
type Snapshot struct {
	Now     time.Time
	Running []Running
	// Recent are completed actions, newest first.
	Recent []*Record
}

// Snapshot returns what runs now and what completed recently.
func (r *Recorder) Snapshot() Snapshot {
	now := r.now()
	r.mu.Lock()
	s := Snapshot{Now: now, Recent: r.recent.newestFirst()}
	for _, record := range r.running {
		// A copy: the stage fields change under the lock.
		c := *record
		s.Running = append(s.Running, Running{
			Record: &c, Stage: c.stage,
			StageElapsed: now.Sub(c.stageSince), Elapsed: now.Sub(c.Started),
		})
	}
	r.mu.Unlock()
	sort.Slice(s.Running, func(i, j int) bool { return s.Running[i].ID < s.Running[j].ID })
	return s
}

// Lookup returns the action with the given ID if it still runs or is
// among the recent ones.
func (r *Recorder) Lookup(id uint64) (*Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if record, ok := r.running[id]; ok {
		c := *record
		return &c, true
	}
	for _, record := range r.recent.records {
		if record != nil && record.ID == id {
			return record, true
		}
	}
	return nil, false
}

// Series returns the per-interval statistics of the last hour, oldest
// first.
func (r *Recorder) Series() []Interval {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.series.intervals(now)
}
