package testsupport

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Concurrently calls do(0..n-1), at most c at a time, and returns the
// wall time and the first error; after an error no new call starts.
// progress, when not nil, is called after each successful call with
// how many have succeeded. The throughput benchmarks (e2e and
// bitzel-bench) drive their clients with it.
func Concurrently(c, n int, do func(i int) error, progress func(done int)) (time.Duration, error) {
	group, ctx := errgroup.WithContext(context.Background())
	group.SetLimit(c)
	var done atomic.Int64
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		group.Go(func() error {
			if ctx.Err() != nil {
				// Queued before another call failed.
				return nil
			}
			if err := do(i); err != nil {
				return err
			}
			if progress != nil {
				progress(int(done.Add(1)))
			}
			return nil
		})
	}
	err := group.Wait()
	return time.Since(start), err
}
