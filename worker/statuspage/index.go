package statuspage

import (
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// defaultRows is how many rows the table shows unless ?limit= asks for
// more: rendering is most of what a view costs, and a viewer refreshes
// every two seconds.
const defaultRows = 100

type indexPage struct {
	Now                       time.Time
	WorkerName                string
	Slots, Busy, Idle         int
	Queue                     int
	QueueKnown                bool
	Running                   []Running
	CacheMetrics              []CacheMetric
	HitRates                  []HitRate
	ActionCache               HitRate
	Disk                      diskUse
	Rows                      []row
	Outcome, Invocation, Sort string
	Outcomes                  []string
	Invocations               []string
	Shown, Matching           int
	// More is the ?limit= of a link to more rows (0: all are shown).
	More         int
	Total        int
	Stages       []string
	StageIndexes []int
}

type row struct {
	*Record
	Outcome  string
	Duration time.Duration
	Segments []segment
}

type segment struct {
	Stage           int
	Name            string
	Offset, Percent float64
	Duration        time.Duration
}

type diskUse struct {
	Known                     bool
	Used, Total, Free, Budget uint64
	BudgetPercent             float64
}

var outcomeFilters = []string{"", "problems", OutcomeSucceeded, OutcomeCached, OutcomeFailed, OutcomeError, OutcomeTimeout, OutcomeOOM}

func (h *handler) serveIndex(w http.ResponseWriter, r *http.Request) {
	snapshot := h.options.Recorder.Snapshot()
	q := r.URL.Query()
	p := indexPage{
		Now:        snapshot.Now,
		WorkerName: h.options.WorkerName,
		Slots:      h.options.Slots,
		Busy:       len(snapshot.Running),
		Running:    snapshot.Running,
		Outcome:    q.Get("outcome"),
		Invocation: q.Get("invocation"),
		Sort:       q.Get("sort"),
		Outcomes:   outcomeFilters,
		Total:      len(snapshot.Recent),
		Stages:     stageNames[:],
	}
	for i := range stageCount {
		p.StageIndexes = append(p.StageIndexes, i)
	}
	p.Idle = max(p.Slots-p.Busy, 0)
	if h.options.QueueLength != nil {
		p.Queue, p.QueueKnown = h.options.QueueLength(), true
	}
	p.CacheMetrics, p.HitRates = cacheFigures(h.options.Gatherer)
	p.Disk = h.diskUse()
	p.ActionCache.Cache = "action cache"
	seen := map[string]bool{}
	var matching []*Record
	for _, record := range snapshot.Recent {
		if record.Cached {
			p.ActionCache.Hits++
		} else {
			p.ActionCache.Misses++
		}
		invocation := record.RequestMetadata.GetToolInvocationId()
		if invocation != "" && !seen[invocation] && len(p.Invocations) < 20 {
			seen[invocation] = true
			p.Invocations = append(p.Invocations, invocation)
		}
		if matches(record, p.Outcome, p.Invocation) {
			matching = append(matching, record)
		}
	}
	if p.Sort == "duration" {
		sort.SliceStable(matching, func(i, j int) bool {
			return matching[i].Duration(snapshot.Now) > matching[j].Duration(snapshot.Now)
		})
	}
	p.Matching = len(matching)
	limit := defaultRows
	if n, err := strconv.Atoi(q.Get("limit")); err == nil && n > 0 {
		limit = n
	}
	if len(matching) > limit {
		matching = matching[:limit]
		p.More = min(p.Matching, 10*limit)
	}
	p.Shown = len(matching)
	p.Rows = rows(matching, snapshot.Now)
	h.render(w, "index.html", &p)
}

// MoreQuery is the query string of the current view with a larger
// limit.
func (p *indexPage) MoreQuery() string {
	q := url.Values{}
	for name, value := range map[string]string{"outcome": p.Outcome, "invocation": p.Invocation, "sort": p.Sort} {
		if value != "" {
			q.Set(name, value)
		}
	}
	q.Set("limit", strconv.Itoa(p.More))
	return q.Encode()
}

func matches(record *Record, outcome, invocation string) bool {
	if invocation != "" && record.RequestMetadata.GetToolInvocationId() != invocation {
		return false
	}
	switch outcome {
	case "":
		return true
	case "problems":
		return record.Failed()
	}
	return record.Outcome() == outcome
}

// rows lays out the timing bars on one scale, the longest action's
// duration, so that slow actions and slow stages stand out.
func rows(records []*Record, now time.Time) []row {
	var longest time.Duration
	for _, record := range records {
		longest = max(longest, record.Duration(now))
	}
	out := make([]row, 0, len(records))
	for _, record := range records {
		rw := row{Record: record, Outcome: record.Outcome(), Duration: record.Duration(now)}
		durations, known := record.StageDurations()
		offset := 0.0
		for stage := range stageCount {
			if known[stage] && longest > 0 {
				percent := 100 * float64(durations[stage]) / float64(longest)
				rw.Segments = append(rw.Segments, segment{
					Stage: stage, Name: stageNames[stage], Duration: durations[stage],
					Offset: offset, Percent: percent,
				})
				offset += percent
			}
		}
		out = append(out, rw)
	}
	return out
}

// diskUse reports the file system of the data directory: the caches
// share it with whatever else lives there, and running out of it is
// what an operator needs to see coming.
func (h *handler) diskUse() diskUse {
	if h.options.DataDirectory == "" {
		return diskUse{}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(h.options.DataDirectory, &st); err != nil {
		return diskUse{}
	}
	d := diskUse{
		Known:  true,
		Total:  st.Blocks * uint64(st.Bsize),
		Free:   st.Bavail * uint64(st.Bsize),
		Budget: uint64(max(h.options.DiskBudgetBytes, 0)),
	}
	d.Used = d.Total - st.Bfree*uint64(st.Bsize)
	if d.Budget > 0 {
		d.BudgetPercent = 100 * float64(d.Used) / float64(d.Budget)
	}
	return d
}
