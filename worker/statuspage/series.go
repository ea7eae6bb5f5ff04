package statuspage

import (
	"math"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// intervalLength and intervalCount make the plots' hour.
	intervalLength = 30 * time.Second
	intervalCount  = 120
	// Latencies are counted in buckets growing by 2^(1/4) (19%) from
	// 1 ms, which bounds both memory and the error of a percentile.
	latencyBucketsPerDoubling = 4
	latencyBuckets            = 26 * latencyBucketsPerDoubling
	latencyBase               = time.Millisecond
)

// Stage names, in the order an action goes through them.
var stageNames = [...]string{"queued", "input fetch", "execution", "output upload"}

const stageCount = len(stageNames)

// StageDurations returns the time the action spent in each stage, and
// whether the worker reported that stage.
func (r *Record) StageDurations() (durations [stageCount]time.Duration, known [stageCount]bool) {
	m := r.Metadata
	spans := [stageCount][2]*timestamppb.Timestamp{
		{m.GetQueuedTimestamp(), m.GetWorkerStartTimestamp()},
		{m.GetInputFetchStartTimestamp(), m.GetInputFetchCompletedTimestamp()},
		{m.GetExecutionStartTimestamp(), m.GetExecutionCompletedTimestamp()},
		{m.GetOutputUploadStartTimestamp(), m.GetOutputUploadCompletedTimestamp()},
	}
	if r.Cached {
		// A cached result carries the metadata of the run that
		// produced it, not of this request.
		return durations, known
	}
	for i, s := range spans {
		if s[0] != nil && s[1] != nil && s[0].IsValid() && s[1].IsValid() {
			if d := s[1].AsTime().Sub(s[0].AsTime()); d >= 0 {
				durations[i], known[i] = d, true
			}
		}
	}
	return durations, known
}

// Interval is what completed in one interval of the last hour.
type Interval struct {
	Start     time.Time
	Completed int
	latencies [stageCount][latencyBuckets]uint32
}

// Percentile returns the stage latency below which fraction p of the
// interval's actions fall, and false when none reported the stage.
func (iv *Interval) Percentile(stage int, p float64) (time.Duration, bool) {
	var total uint64
	for _, n := range iv.latencies[stage] {
		total += uint64(n)
	}
	if total == 0 {
		return 0, false
	}
	rank := uint64(math.Ceil(p * float64(total)))
	var seen uint64
	for b, n := range iv.latencies[stage] {
		seen += uint64(n)
		if seen >= rank {
			return bucketUpperBound(b), true
		}
	}
	return bucketUpperBound(latencyBuckets - 1), true
}

func latencyBucket(d time.Duration) int {
	if d <= latencyBase {
		return 0
	}
	b := int(math.Ceil(math.Log2(float64(d)/float64(latencyBase)) * latencyBucketsPerDoubling))
	return min(b, latencyBuckets-1)
}

func bucketUpperBound(b int) time.Duration {
	return time.Duration(float64(latencyBase) * math.Exp2(float64(b)/latencyBucketsPerDoubling))
}

// series is a ring of intervals covering the last hour.
type series struct {
	intervalsRing [intervalCount]Interval
	// newest is the index of the interval that starts at newestStart.
	newest      int
	newestStart time.Time
}

func newSeries(now time.Time) *series {
	s := &series{newestStart: now.Truncate(intervalLength)}
	s.intervalsRing[0].Start = s.newestStart
	return s
}

// advance makes the newest interval the one that contains now,
// clearing those it skips.
func (s *series) advance(now time.Time) {
	start := now.Truncate(intervalLength)
	for steps := 0; s.newestStart.Before(start) && steps < intervalCount; steps++ {
		s.newestStart = s.newestStart.Add(intervalLength)
		s.newest = (s.newest + 1) % intervalCount
		s.intervalsRing[s.newest] = Interval{Start: s.newestStart}
	}
	if s.newestStart.Before(start) {
		// Idle for more than the hour: every interval was cleared.
		s.newestStart = start
		s.intervalsRing[s.newest].Start = start
	}
}

func (s *series) add(r *Record, now time.Time) {
	s.advance(now)
	iv := &s.intervalsRing[s.newest]
	iv.Completed++
	durations, known := r.StageDurations()
	for stage := range stageCount {
		if known[stage] {
			iv.latencies[stage][latencyBucket(durations[stage])]++
		}
	}
}

// intervals returns the hour ending now, oldest first, with an empty
// interval for every one in which nothing completed.
func (s *series) intervals(now time.Time) []Interval {
	s.advance(now)
	out := make([]Interval, 0, intervalCount)
	for i := 1; i <= intervalCount; i++ {
		iv := s.intervalsRing[(s.newest+i)%intervalCount]
		if iv.Start.IsZero() {
			iv.Start = s.newestStart.Add(-time.Duration(intervalCount-i) * intervalLength)
		}
		out = append(out, iv)
	}
	return out
}
