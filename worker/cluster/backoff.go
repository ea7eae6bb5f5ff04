package cluster

import (
	"time"

	"github.com/buildbarn/bb-storage/pkg/random"
)

// backoff spaces out retries of Synchronize while the scheduler is
// unreachable or refusing us: the ceiling doubles after every failure,
// from initial up to maximum, and each delay is drawn from the upper
// half of the current ceiling. The jitter keeps the many slots of a
// cluster that lost the scheduler at the same moment from all coming
// back at the same moment; the lower bound keeps a slot from retrying
// in a tight loop.
type backoff struct {
	initial, maximum time.Duration
	random           random.ThreadSafeGenerator
	ceiling          time.Duration
}

func newBackoff(initial, maximum time.Duration, generator random.ThreadSafeGenerator) *backoff {
	return &backoff{initial: initial, maximum: maximum, random: generator, ceiling: initial}
}

// next returns how long to wait after one more consecutive failure.
func (b *backoff) next() time.Duration {
	ceiling := b.ceiling
	if b.ceiling < b.maximum {
		b.ceiling *= 2
		if b.ceiling > b.maximum {
			b.ceiling = b.maximum
		}
	}
	half := ceiling / 2
	return ceiling - half + time.Duration(b.random.Int64N(int64(half)+1))
}

// reset starts over after a successful call.
func (b *backoff) reset() {
	b.ceiling = b.initial
}
