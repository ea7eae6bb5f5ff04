// Package cluster lets bitzel-worker join a Buildbarn cluster in place
// of bb_worker + bb_runner: it speaks the worker side of
// buildbarn.remoteworker.OperationQueue/Synchronize to bb_scheduler and
// runs the actions it is given on a worker.Executor.
package cluster

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/bitzel/bitzel-worker/worker"
	"github.com/bitzel/bitzel-worker/worker/remoteworker"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Client is a worker registered with a Buildbarn scheduler.
type Client interface {
	// Run takes actions from the scheduler and executes them until
	// ctx is done, then drains: every slot finishes and reports the
	// action it is running, tells the scheduler it wants no more
	// work, and stops. A scheduler that cannot be reached is retried
	// with exponential backoff for as long as ctx lives; while
	// draining, only for as long as it would still want our results
	// (Options.WorkerTimeout). Run returns nil once drained; it may
	// be called once.
	Run(ctx context.Context) error
}

type client struct {
	slots   []*slot
	started atomic.Bool
}

// NewClient returns a Client with options.Concurrency slots that call
// operationQueue (a connection to bb_scheduler's worker gRPC endpoint)
// and run actions on executor.
func NewClient(operationQueue remoteworker.OperationQueueClient, executor worker.Executor, options Options) (Client, error) {
	options.setDefaults()
	if err := options.validate(); err != nil {
		return nil, err
	}
	platform := sortedPlatform(options.Platform)
	c := &client{}
	for i := 0; i < options.Concurrency; i++ {
		c.slots = append(c.slots, newSlot(operationQueue, executor, &options, options.slotWorkerID(i), platform))
	}
	return c, nil
}

func (c *client) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return status.Error(codes.FailedPrecondition, "Client is already running or has run")
	}
	var wg sync.WaitGroup
	for _, s := range c.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx)
		}()
	}
	wg.Wait()
	return nil
}
