package cluster_test

import (
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/worker"
	"github.com/bitzel/bitzel-worker/worker/cluster"
	"github.com/bitzel/bitzel-worker/worker/cluster/schedulertest"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// metricValue reads a counter or gauge of the default registry; labels
// select one series of a vector.
func metricValue(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
	metrics:
		for _, m := range family.GetMetric() {
			for _, pair := range m.GetLabel() {
				if labels[pair.GetName()] != pair.GetValue() {
					continue metrics
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
		return 0
	}
	return 0
}

// metricDelta tells how a metric moved since it was created.
type metricDelta struct {
	t      *testing.T
	name   string
	labels map[string]string
	start  float64
}

func watchMetric(t *testing.T, name string, labels map[string]string) *metricDelta {
	return &metricDelta{t: t, name: name, labels: labels, start: metricValue(t, name, labels)}
}

func (m *metricDelta) expect(want float64) {
	m.t.Helper()
	// Gauges and counters move on the slots' goroutines, just after
	// the report the test waited for.
	deadline := time.Now().Add(realTimeLimit)
	for {
		got := metricValue(m.t, m.name, m.labels) - m.start
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s%v moved by %v, want %v", m.name, m.labels, got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSlotExecutorsAreMadePerSlotWithBBWorkerNames(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, d)
	names := map[int]string{}
	h.newClient(cluster.Options{WorkerID: map[string]string{"hostname": "h", "pod": "p"}, Concurrency: 2}, func(slot int, name string) (worker.Executor, error) {
		names[slot] = name
		return h.executor, nil
	})
	want := map[int]string{
		0: `{"hostname":"h","pod":"p","thread":"0"}`,
		1: `{"hostname":"h","pod":"p","thread":"1"}`,
	}
	if len(names) != 2 || names[0] != want[0] || names[1] != want[1] {
		t.Errorf("executors made for %v, want %v", names, want)
	}

	_, err := cluster.NewClientWithSlotExecutors(h.queue, func(int, string) (worker.Executor, error) {
		return nil, status.Error(codes.FailedPrecondition, "no sandbox")
	}, cluster.Options{Concurrency: 1})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a failing factory gave %v", err)
	}
}

func TestMetricsAndReadiness(t *testing.T) {
	clock := newFakeClock()
	d := schedulertest.New(clock, sortedPlatform, 0)
	h := newHarness(t, clock, d)
	slots := watchMetric(t, "bitzel_cluster_slots", nil)
	executing := watchMetric(t, "bitzel_cluster_slots_executing", nil)
	failing := watchMetric(t, "bitzel_cluster_slots_failing", nil)
	calls := watchMetric(t, "bitzel_cluster_synchronizations_total", nil)
	unavailable := watchMetric(t, "bitzel_cluster_synchronization_errors_total", map[string]string{"grpc_code": "Unavailable"})
	outcomes := map[string]*metricDelta{}
	for _, outcome := range []string{"succeeded", "failed", "error", "abandoned"} {
		outcomes[outcome] = watchMetric(t, "bitzel_cluster_actions_total", map[string]string{"outcome": outcome})
	}

	ids := []map[string]string{{"hostname": "m", "thread": "0"}, {"hostname": "m", "thread": "1"}}
	r := h.start(cluster.Options{WorkerID: map[string]string{"hostname": "m"}, Platform: configuredPlatform, Concurrency: 2})
	for _, id := range ids {
		expectRequest(t, d, id, "idle", false)
	}
	// The scheduler holds idle calls open, as bb_scheduler does for
	// up to two minutes; a call held open counts.
	if !r.client.Ready() {
		t.Error("not ready while the scheduler holds every slot's call")
	}
	slots.expect(2)
	calls.expect(2)

	// Two actions at once, one per slot.
	var both []*executeCall
	for _, name := range []string{"exit 0", "exit 3"} {
		actionDigest, action := testAction(name)
		d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
		both = append(both, h.executor.nextCall(t))
	}
	for _, id := range ids {
		expectRequest(t, d, id, "started", false)
	}
	executing.expect(2)
	both[0].complete(t, okResponse(0))
	both[1].complete(t, okResponse(3))
	for _, id := range ids {
		expectRequest(t, d, id, "completed", false)
	}
	outcomes["succeeded"].expect(1)
	outcomes["failed"].expect(1)
	executing.expect(0)

	run := func(name string, finish func(call *executeCall)) (*schedulertest.Task, map[string]string) {
		t.Helper()
		actionDigest, action := testAction(name)
		task := d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
		call := h.executor.nextCall(t)
		id := d.FirstToRequest(t, ids...)
		expectRequest(t, d, id, "started", false)
		finish(call)
		return task, id
	}
	_, third := run("no result", func(call *executeCall) {
		call.complete(t, &remoteexecution.ExecuteResponse{Status: status.New(codes.Internal, "broken").Proto()})
	})
	expectRequest(t, d, third, "completed", false)
	outcomes["error"].expect(1)

	task, fourth := run("cancelled", func(*executeCall) {})
	d.Cancel(task)
	clock.waitForTimerOf(t, d.BusyInterval)
	clock.advance(d.BusyInterval)
	expectRequest(t, d, fourth, "started", false)
	expectRequest(t, d, fourth, "idle", false)
	outcomes["abandoned"].expect(1)
	executing.expect(0)

	// The scheduler goes away: the held calls fail.
	h.scheduler.stop()
	failing.expect(2)
	if r.client.Ready() {
		t.Error("ready while the scheduler is down")
	}
	if metricValue(t, "bitzel_cluster_synchronization_errors_total", map[string]string{"grpc_code": "Unavailable"})-unavailable.start < 2 {
		t.Error("the failed calls were not counted as UNAVAILABLE")
	}

	// Draining waits until the unreachable scheduler must have
	// forgotten the slots, in fake time.
	r.cancel()
	for deadline := time.Now().Add(realTimeLimit); !r.returned(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Run did not return")
		}
		clock.advance(time.Minute)
	}
	slots.expect(0)
	failing.expect(0)
	if r.client.Ready() {
		t.Error("ready after Run returned")
	}
	if r.err != nil {
		t.Errorf("Run returned %v", r.err)
	}
}
