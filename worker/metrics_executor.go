package worker

import (
	"context"
	"sync"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var (
	executorMetricsOnce sync.Once

	actionsCompleted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "bitzel",
		Subsystem: "executor",
		Name:      "actions_completed_total",
		Help:      "Actions executed, by gRPC status code and whether the command exited 0.",
	}, []string{"grpc_code", "exit"})
	actionsRunning = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "bitzel",
		Subsystem: "executor",
		Name:      "actions_running",
		Help:      "Actions between start and completion.",
	})
	stageSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "bitzel",
		Subsystem: "executor",
		Name:      "stage_duration_seconds",
		Help:      "Time actions spend in each stage.",
		Buckets:   prometheus.ExponentialBuckets(0.0005, 2, 20),
	}, []string{"stage"})
)

type metricsExecutor struct {
	Executor
}

// NewMetricsExecutor exports Prometheus metrics in Buildbarn's style
// for every action: counts by outcome and per-stage durations.
func NewMetricsExecutor(base Executor) Executor {
	executorMetricsOnce.Do(func() {
		prometheus.MustRegister(actionsCompleted, actionsRunning, stageSeconds)
	})
	return &metricsExecutor{Executor: base}
}

func (e *metricsExecutor) Execute(ctx context.Context, request *Request, observer Observer) *remoteexecution.ExecuteResponse {
	actionsRunning.Inc()
	response := e.Executor.Execute(ctx, request, observer)
	actionsRunning.Dec()
	exit := "zero"
	if response.Result.GetExitCode() != 0 {
		exit = "nonzero"
	}
	actionsCompleted.WithLabelValues(status.FromProto(response.Status).Code().String(), exit).Inc()
	m := response.Result.GetExecutionMetadata()
	for _, stage := range []struct {
		name       string
		start, end *timestamppb.Timestamp
	}{
		{"fetching_inputs", m.GetInputFetchStartTimestamp(), m.GetInputFetchCompletedTimestamp()},
		{"running", m.GetExecutionStartTimestamp(), m.GetExecutionCompletedTimestamp()},
		{"uploading_outputs", m.GetOutputUploadStartTimestamp(), m.GetOutputUploadCompletedTimestamp()},
	} {
		if stage.start.IsValid() && stage.end.IsValid() && stage.start != nil && stage.end != nil {
			stageSeconds.WithLabelValues(stage.name).Observe(stage.end.AsTime().Sub(stage.start.AsTime()).Seconds())
		}
	}
	return response
}
