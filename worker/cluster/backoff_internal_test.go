package cluster

import (
	"testing"
	"time"

	"github.com/buildbarn/bb-storage/pkg/random"
)

// extremeRandom draws the smallest or the largest value allowed, so
// that both ends of the jitter range are checked exactly. Other methods
// are not used by backoff and panic.
type extremeRandom struct {
	random.ThreadSafeGenerator
	top bool
}

func (r extremeRandom) Int64N(n int64) int64 {
	if r.top {
		return n - 1
	}
	return 0
}

func TestBackoffDoublesUpToTheMaximumAndResets(t *testing.T) {
	for _, top := range []bool{false, true} {
		b := newBackoff(time.Second, 5*time.Second, extremeRandom{top: top})
		var got []time.Duration
		for range 6 {
			got = append(got, b.next())
		}
		b.reset()
		got = append(got, b.next())
		ceilings := []time.Duration{1, 2, 4, 5, 5, 5, 1}
		for i, ceiling := range ceilings {
			ceiling *= time.Second
			want := ceiling - ceiling/2
			if top {
				want = ceiling
			}
			if got[i] != want {
				t.Errorf("top=%v: delay %d is %s, want %s (all: %v)", top, i, got[i], want, got)
			}
		}
	}
}
