package cluster

import (
	"sync"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Metrics of every Client in the process, in Buildbarn's style
// (bb_worker exports its own under buildbarn_builder_*). What an
// operator asks of a worker: is it talking to the scheduler, how
// busy are its slots, and how do its actions end.
var (
	metricsOnce sync.Once

	slotsGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "bitzel",
		Subsystem: "cluster",
		Name:      "slots",
		Help:      "Slots synchronizing with the scheduler, one per worker ID.",
	})
	slotsExecuting = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "bitzel",
		Subsystem: "cluster",
		Name:      "slots_executing",
		Help:      "Slots running an action or holding its result for the scheduler.",
	})
	slotsFailing = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "bitzel",
		Subsystem: "cluster",
		Name:      "slots_failing",
		Help:      "Slots whose latest Synchronize call that ended failed (until a later call ends successfully); zero when the worker is registered.",
	})
	synchronizations = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "bitzel",
		Subsystem: "cluster",
		Name:      "synchronizations_total",
		Help:      "Synchronize calls made to the scheduler, successful or not.",
	})
	synchronizationErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "bitzel",
		Subsystem: "cluster",
		Name:      "synchronization_errors_total",
		Help:      "Synchronize calls that failed, by gRPC status code.",
	}, []string{"grpc_code"})
	actionsCompleted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "bitzel",
		Subsystem: "cluster",
		Name:      "actions_total",
		Help:      "Actions the scheduler assigned, by how they ended: succeeded (exit 0), failed (non-zero exit), error (no result), rejected (could not be run), abandoned (the scheduler or shutdown gave up on them).",
	}, []string{"outcome"})
)

// Values of the outcome label of bitzel_cluster_actions_total.
const (
	outcomeSucceeded = "succeeded"
	outcomeFailed    = "failed"
	outcomeError     = "error"
	outcomeRejected  = "rejected"
	outcomeAbandoned = "abandoned"
)

func registerMetrics() {
	metricsOnce.Do(func() {
		prometheus.MustRegister(slotsGauge, slotsExecuting, slotsFailing, synchronizations, synchronizationErrors, actionsCompleted)
		// Every series exists from the start, so that rates and
		// alerts work before the first occurrence.
		for _, outcome := range []string{outcomeSucceeded, outcomeFailed, outcomeError, outcomeRejected, outcomeAbandoned} {
			actionsCompleted.WithLabelValues(outcome)
		}
	})
}

// completionOutcome classifies a completed action for the metrics.
func completionOutcome(response *remoteexecution.ExecuteResponse) string {
	switch {
	case status.FromProto(response.GetStatus()).Code() != codes.OK || response.GetResult() == nil:
		return outcomeError
	case response.Result.ExitCode != 0:
		return outcomeFailed
	default:
		return outcomeSucceeded
	}
}
