package parallel

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestRunCallsEachIndexOnceWithinTheLimit(t *testing.T) {
	for _, limit := range []int{0, 1, 3, 100} {
		var mu sync.Mutex
		seen := map[int]int{}
		var running, most atomic.Int64
		err := Run(context.Background(), limit, 20, func(ctx context.Context, i int) error {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			mu.Lock()
			seen[i]++
			mu.Unlock()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != 20 {
			t.Errorf("limit %d: %d indices called", limit, len(seen))
		}
		for i, n := range seen {
			if n != 1 || i < 0 || i >= 20 {
				t.Errorf("limit %d: index %d called %d times", limit, i, n)
			}
		}
		if m := most.Load(); m > int64(max(limit, 1)) {
			t.Errorf("limit %d: %d calls at once", limit, m)
		}
	}
	if err := Run(context.Background(), 4, 0, func(context.Context, int) error { return errors.New("called") }); err != nil {
		t.Fatalf("no calls expected: %v", err)
	}
}

// The first error is returned, the calls in flight see their context
// cancelled, and no new calls start.
func TestRunStopsAtTheFirstError(t *testing.T) {
	boom := errors.New("boom")
	for _, limit := range []int{1, 4} {
		var calls atomic.Int64
		release := make(chan struct{})
		err := Run(context.Background(), limit, 1000, func(ctx context.Context, i int) error {
			calls.Add(1)
			if i == 0 {
				defer close(release)
				return boom
			}
			<-release
			<-ctx.Done()
			return ctx.Err()
		})
		if err != boom {
			t.Errorf("limit %d: got %v, want the first error", limit, err)
		}
		if n := calls.Load(); n > int64(limit) {
			t.Errorf("limit %d: %d calls after the first failed", limit, n)
		}
	}
}
