// Package cluster lets bitzel-worker join a Buildbarn cluster in place
// of bb_worker + bb_runner: it speaks the worker side of
// buildbarn.remoteworker.OperationQueue/Synchronize to bb_scheduler and
// runs the actions it is given on a worker.Executor.
package cluster

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/buildbarn/bb-storage/pkg/util"

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
	// Ready tells whether every slot is synchronizing: it has made a
	// Synchronize call, and its latest call that ended did not fail.
	// A call the scheduler holds open counts (bb_scheduler holds an
	// idle worker's call for up to two minutes, and knows the worker
	// from the moment it arrives); after a refused or failed one, the
	// slot is not ready until a later call ends successfully, which
	// for an idle slot may be as late as the end of that hold.
	Ready() bool
}

// SlotExecutorFactory returns the Executor that slot number slot (from
// zero) runs its actions on. workerName is the slot's worker ID as
// bb_worker renders it (JSON, keys sorted), which bb_worker also reports
// as ExecutedActionMetadata.worker; an Executor per slot can do the same.
type SlotExecutorFactory func(slot int, workerName string) (worker.Executor, error)

type client struct {
	slots   []*slot
	started atomic.Bool
}

// NewClient returns a Client with options.Concurrency slots that call
// operationQueue (a connection to bb_scheduler's worker gRPC endpoint)
// and run actions on executor, which they share.
func NewClient(operationQueue remoteworker.OperationQueueClient, executor worker.Executor, options Options) (Client, error) {
	return NewClientWithSlotExecutors(operationQueue, func(int, string) (worker.Executor, error) { return executor, nil }, options)
}

// NewClientWithSlotExecutors is NewClient with an Executor of its own
// for every slot.
func NewClientWithSlotExecutors(operationQueue remoteworker.OperationQueueClient, newExecutor SlotExecutorFactory, options Options) (Client, error) {
	options.setDefaults()
	if err := options.validate(); err != nil {
		return nil, err
	}
	registerMetrics()
	platform := sortedPlatform(options.Platform)
	c := &client{}
	for i := 0; i < options.Concurrency; i++ {
		workerID := options.slotWorkerID(i)
		executor, err := newExecutor(i, workerName(workerID))
		if err != nil {
			return nil, util.StatusWrapf(err, "Failed to create the executor of worker %s", workerName(workerID))
		}
		c.slots = append(c.slots, newSlot(operationQueue, executor, &options, workerID, platform))
	}
	return c, nil
}

func (c *client) Ready() bool {
	for _, s := range c.slots {
		if !s.synchronizing.Load() || s.failingNow.Load() {
			return false
		}
	}
	return true
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
