package worker

import (
	"context"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func metricValue(t *testing.T, m prometheus.Metric) *dto.Metric {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func completedCount(t *testing.T, code, exit string) float64 {
	return metricValue(t, actionsCompleted.WithLabelValues(code, exit)).GetCounter().GetValue()
}

func stageCount(t *testing.T, stage string) uint64 {
	return metricValue(t, stageSeconds.WithLabelValues(stage).(prometheus.Metric)).GetHistogram().GetSampleCount()
}

// runningDuring reports the actions_running gauge while the action runs.
type runningDuring struct {
	t        *testing.T
	response *remoteexecution.ExecuteResponse
	running  float64
}

func (e *runningDuring) Execute(context.Context, *Request, Observer) *remoteexecution.ExecuteResponse {
	e.running = metricValue(e.t, actionsRunning).GetGauge().GetValue()
	return e.response
}

func TestMetricsExecutorCountsOutcomesAndStageDurations(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(start.Add(d)) }
	withStages := &remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{
		ExitCode: 2,
		ExecutionMetadata: &remoteexecution.ExecutedActionMetadata{
			InputFetchStartTimestamp: at(0), InputFetchCompletedTimestamp: at(time.Second),
			ExecutionStartTimestamp: at(time.Second), ExecutionCompletedTimestamp: at(3 * time.Second),
			// Upload never finished: not observed.
			OutputUploadStartTimestamp: at(3 * time.Second),
		},
	}}
	base := &runningDuring{t: t, response: withStages}
	e := NewMetricsExecutor(base)
	// A second one shares the registered metrics instead of panicking
	// on a duplicate registration.
	NewMetricsExecutor(base)

	nonzero, fetching, running, uploading := completedCount(t, "OK", "nonzero"), stageCount(t, "fetching_inputs"), stageCount(t, "running"), stageCount(t, "uploading_outputs")
	runningSum := metricValue(t, stageSeconds.WithLabelValues("running").(prometheus.Metric)).GetHistogram().GetSampleSum()
	if got := e.Execute(context.Background(), &Request{}, NoopObserver); got != withStages {
		t.Fatalf("response %v, want the base's", got)
	}
	if base.running != 1 {
		t.Errorf("actions_running %v during the action, want 1", base.running)
	}
	if got := metricValue(t, actionsRunning).GetGauge().GetValue(); got != 0 {
		t.Errorf("actions_running %v after, want 0", got)
	}
	if got := completedCount(t, "OK", "nonzero"); got != nonzero+1 {
		t.Errorf("completed{OK,nonzero} went from %v to %v", nonzero, got)
	}
	if stageCount(t, "fetching_inputs") != fetching+1 || stageCount(t, "running") != running+1 {
		t.Error("fetching and running durations not observed")
	}
	if got := metricValue(t, stageSeconds.WithLabelValues("running").(prometheus.Metric)).GetHistogram().GetSampleSum() - runningSum; got != 2 {
		t.Errorf("running took %vs by the histogram, want 2", got)
	}
	if stageCount(t, "uploading_outputs") != uploading {
		t.Error("an upload without its end was observed")
	}

	// A failed action without a result counts under its code.
	unavailable := completedCount(t, "Unavailable", "zero")
	base.response = &remoteexecution.ExecuteResponse{Status: status.New(codes.Unavailable, "x").Proto()}
	e.Execute(context.Background(), &Request{}, NoopObserver)
	if got := completedCount(t, "Unavailable", "zero"); got != unavailable+1 {
		t.Errorf("completed{Unavailable,zero} went from %v to %v", unavailable, got)
	}
}
