package worker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRetryUnavailable(t *testing.T) {
	refused := status.Error(codes.InvalidArgument, "bad tree")
	for _, tc := range []struct {
		name        string
		errs        []error // returned in turn, then nil
		timeout     time.Duration
		wantCalls   int
		wantCode    codes.Code
		wantMessage string
		wantSame    bool
	}{
		{name: "success", wantCalls: 1, wantCode: codes.OK},
		{name: "unavailable then success", errs: []error{status.Error(codes.Unavailable, "reset")}, wantCalls: 2, wantCode: codes.OK},
		{name: "not retried", errs: []error{refused}, wantCalls: 1, wantCode: codes.InvalidArgument, wantSame: true},
		{name: "plain error not retried", errs: []error{errors.New("boom")}, wantCalls: 1, wantCode: codes.Unknown},
		{name: "deadline of the storage", errs: []error{status.Error(codes.DeadlineExceeded, "slow")}, wantCalls: 1, wantCode: codes.Unavailable, wantMessage: "Fetching: storage did not respond in time: slow"},
		{name: "cancelled by the storage", errs: []error{status.Error(codes.Canceled, "went away")}, wantCalls: 1, wantCode: codes.Canceled},
		{name: "stays unavailable", errs: []error{
			status.Error(codes.Unavailable, "down"), status.Error(codes.Unavailable, "down"), status.Error(codes.Unavailable, "down"),
			status.Error(codes.Unavailable, "down"), status.Error(codes.Unavailable, "down"),
		}, timeout: 150 * time.Millisecond, wantCode: codes.Unavailable, wantMessage: "Fetching: storage stayed unavailable: down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			calls := 0
			err := retryUnavailable(ctx, "Fetching", func(context.Context) error {
				calls++
				if calls <= len(tc.errs) {
					return tc.errs[calls-1]
				}
				return nil
			})
			if status.Code(err) != tc.wantCode || !strings.Contains(status.Convert(err).Message(), tc.wantMessage) {
				t.Errorf("%v, want %v mentioning %q", err, tc.wantCode, tc.wantMessage)
			}
			if tc.wantSame && err != refused {
				t.Errorf("%v, want the op's own error unchanged", err)
			}
			if tc.wantCalls > 0 && calls != tc.wantCalls {
				t.Errorf("%d calls, want %d", calls, tc.wantCalls)
			}
			if tc.timeout > 0 && (calls < 2 || calls > 3) {
				t.Errorf("%d calls within %v, want 2 or 3 with a 100ms, 200ms backoff", calls, tc.timeout)
			}
		})
	}
}

// When ctx ends while the op fails with it, the storage is blamed as
// UNAVAILABLE naming what was done, so the action fails cleanly.
func TestRetryUnavailableAfterTheContextEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := retryUnavailable(ctx, "Uploading", func(ctx context.Context) error {
		return status.FromContextError(ctx.Err()).Err()
	})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "Uploading: storage did not respond in time") {
		t.Errorf("%v, want UNAVAILABLE naming the upload", err)
	}
}
