package worker

import (
	"context"
	"time"

	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Backoff of retried storage operations.
const (
	retryInitialDelay = 100 * time.Millisecond
	retryMaximumDelay = 5 * time.Second
)

// retryUnavailable runs op until it succeeds, fails with anything but
// UNAVAILABLE, or ctx ends. A CAS that restarts or drops a connection
// costs a retry, not the action. When ctx ends first the last error is
// returned as UNAVAILABLE, naming what was being done, so that a CAS
// that never answers fails the action cleanly within its deadline.
func retryUnavailable(ctx context.Context, what string, op func(ctx context.Context) error) error {
	delay := retryInitialDelay
	for {
		err := op(ctx)
		if err == nil {
			return nil
		}
		code := status.Code(err)
		if code != codes.Unavailable && code != codes.DeadlineExceeded && code != codes.Canceled {
			// The worker's own verdict (an output over its
			// budget, a bad tree), even when it came as ctx
			// ended: not to be passed off as the storage's.
			return err
		}
		if ctx.Err() != nil || code == codes.DeadlineExceeded {
			return util.StatusWrapWithCode(err, codes.Unavailable, what+": storage did not respond in time")
		}
		if code != codes.Unavailable {
			return err
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return util.StatusWrapWithCode(err, codes.Unavailable, what+": storage stayed unavailable")
		}
		delay = min(2*delay, retryMaximumDelay)
	}
}
