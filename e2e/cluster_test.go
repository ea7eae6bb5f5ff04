package e2e

// The real `bitzel-worker worker` binary in a Buildbarn cluster made of
// a scheduler double (worker/cluster/schedulertest, speaking the real
// buildbarn.remoteworker protocol over TCP) and `bitzel-worker serve`
// as the cluster's CAS and Action Cache. A real bb_scheduler cannot be
// built here (bb-remote-execution is not served by the module proxy);
// README.md says what was checked against one by hand.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/internal/testsupport"
	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"github.com/bitzel/bitzel-worker/worker/cluster/schedulertest"
	"github.com/buildbarn/bb-storage/pkg/clock"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// clusterPlatform is what the test workers offer and the double's
// platform queue is for.
var clusterPlatform = &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{
	{Name: "OSFamily", Value: "linux"},
}}

// startSchedulerDouble serves a scheduler double on a loopback port.
func startSchedulerDouble(t *testing.T) (*schedulertest.Scheduler, string) {
	t.Helper()
	d := schedulertest.New(clock.SystemClock, clusterPlatform, 0)
	// Short, so that a cancellation reaches a busy worker quickly:
	// it learns of it at its next report.
	d.BusyInterval = 500 * time.Millisecond
	d.RealTimeLimit = 90 * time.Second
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	remoteworker.RegisterOperationQueueServer(server, d)
	go server.Serve(listener)
	t.Cleanup(server.Stop)
	return d, listener.Addr().String()
}

// freeAddress returns a loopback address nobody listens on (for the
// worker's diagnostics server, whose configuration takes no port 0).
func freeAddress(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	return listener.Addr().String()
}

// clusterWorker is a running `bitzel-worker worker`.
type clusterWorker struct {
	t           *testing.T
	cmd         *exec.Cmd
	workerID    map[string]string
	metricsAddr string
	logMu       sync.Mutex
	log         strings.Builder
	exited      chan struct{}
}

// startClusterWorker writes a WorkerConfiguration (JSON is Jsonnet)
// and starts the worker with it, with one slot under workerID.
func startClusterWorker(t *testing.T, storageAddress, schedulerAddress string, workerID map[string]string) *clusterWorker {
	t.Helper()
	dir, err := os.MkdirTemp("", "bitzel-e2e-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	// A root worker's actions run as unprivileged ids that must
	// reach the caches.
	os.Chmod(dir, 0o755)
	w := &clusterWorker{t: t, workerID: workerID, metricsAddr: freeAddress(t), exited: make(chan struct{})}
	config := map[string]any{
		"global": map[string]any{
			"diagnosticsHttpServer": map[string]any{
				"httpServers": []any{map[string]any{
					"listenAddresses":      []string{w.metricsAddr},
					"authenticationPolicy": map[string]any{"allow": map[string]any{}},
				}},
				"enablePrometheus": true,
			},
		},
		"blobstore": map[string]any{
			"contentAddressableStorage": map[string]any{"grpc": map[string]any{"client": map[string]any{"address": storageAddress}}},
			// As bb-deployments writes it: the worker only writes
			// to the Action Cache, so the check is harmless.
			"actionCache": map[string]any{"completenessChecking": map[string]any{
				"backend":                   map[string]any{"grpc": map[string]any{"client": map[string]any{"address": storageAddress}}},
				"maximumTotalTreeSizeBytes": 64 << 20,
			}},
		},
		"maximumMessageSizeBytes": 16 << 20,
		"scheduler":               map[string]any{"address": schedulerAddress},
		"executor": map[string]any{
			"dataDirectoryPath": filepath.Join(dir, "data"),
			"sandbox":           map[string]any{"warmSandboxes": 1},
		},
		"runners": []any{map[string]any{
			"concurrency": 1,
			"platform":    map[string]any{"properties": []any{map[string]any{"name": "OSFamily", "value": "linux"}}},
			"workerId":    workerID,
		}},
	}
	return runClusterWorker(t, w, dir, config)
}

// runClusterWorker writes config as the worker's configuration in dir
// and starts w with it; the test's end stops it and removes dir.
func runClusterWorker(t *testing.T, w *clusterWorker, dir string, config map[string]any) *clusterWorker {
	t.Helper()
	data, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	configPath := filepath.Join(dir, "worker.jsonnet")
	if err := os.WriteFile(configPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	w.cmd = exec.Command(filepath.Join(binaries(t), "bitzel-worker"), "worker", "--config", configPath)
	stderr, err := w.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			w.logMu.Lock()
			w.log.WriteString(scanner.Text() + "\n")
			w.logMu.Unlock()
		}
		io.Copy(io.Discard, stderr)
		w.cmd.Wait()
		close(w.exited)
	}()
	t.Cleanup(func() {
		w.stop()
		if t.Failed() {
			t.Logf("worker log:\n%s", w.logs())
		}
		fsutil.RemoveAll(dir)
	})
	return w
}

func (w *clusterWorker) logs() string {
	w.logMu.Lock()
	defer w.logMu.Unlock()
	return w.log.String()
}

// stop sends SIGTERM and waits for the worker to exit.
func (w *clusterWorker) stop() {
	select {
	case <-w.exited:
		return
	default:
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.exited:
	case <-time.After(90 * time.Second):
		w.cmd.Process.Kill()
		<-w.exited
		w.t.Errorf("worker did not stop on SIGTERM:\n%s", w.logs())
	}
}

// waitExited waits for the worker to exit by itself, and checks that it
// exited 0: drained.
func (w *clusterWorker) waitExited(t *testing.T) {
	t.Helper()
	select {
	case <-w.exited:
	case <-time.After(90 * time.Second):
		t.Fatalf("worker did not exit:\n%s", w.logs())
	}
	if !w.cmd.ProcessState.Success() {
		t.Errorf("worker ended with %v, want exit status 0 after draining", w.cmd.ProcessState)
	}
}

// waitForStage waits until the worker has reported stage (for any action).
func waitForStage(t *testing.T, d *schedulertest.Scheduler, workerID map[string]string, stage string) {
	t.Helper()
	key := schedulertest.WorkerKey(workerID)
	d.WaitFor(t, "worker "+key+" to report "+stage, func(requests map[string][]*remoteworker.SynchronizeRequest, _ []schedulertest.Completion) bool {
		for _, request := range requests[key] {
			if testsupport.SynchronizeStage(request) == stage {
				return true
			}
		}
		return false
	})
}

// waitForCompletion waits until the double recorded the completion of
// the action and returns its ExecuteResponse.
func waitForCompletion(t *testing.T, d *schedulertest.Scheduler, actionDigest *remoteexecution.Digest) *remoteexecution.ExecuteResponse {
	t.Helper()
	var response *remoteexecution.ExecuteResponse
	d.WaitFor(t, "the completion of "+key(actionDigest), func(_ map[string][]*remoteworker.SynchronizeRequest, completions []schedulertest.Completion) bool {
		for _, c := range completions {
			if proto.Equal(c.Digest, actionDigest) {
				response = c.Response
				return true
			}
		}
		return false
	})
	return response
}

// clusterTask turns an action stored in the CAS into a task as
// bb_scheduler queues it: with the Action inline.
func clusterTask(t *testing.T, c *client, actionDigest *remoteexecution.Digest) *schedulertest.Task {
	t.Helper()
	action := &remoteexecution.Action{}
	if err := proto.Unmarshal(c.read(actionDigest), action); err != nil {
		t.Fatal(err)
	}
	return &schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256}
}

// processesRunning lists the processes whose command line is args.
func processesRunning(args ...string) []int {
	want := strings.Join(args, "\x00") + "\x00"
	entries, _ := os.ReadDir("/proc")
	var found []int
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && string(cmdline) == want {
			var pid int
			fmt.Sscan(e.Name(), &pid)
			found = append(found, pid)
		}
	}
	return found
}

func waitUntil(t *testing.T, what string, condition func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !condition(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	response, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	body, _ := io.ReadAll(response.Body)
	return response.StatusCode, string(body)
}

// Long on purpose: one scenario whose steps build on each other (each
// needs the state the previous left), read top to bottom.
func TestClusterWorkerRunsAssignedActionsAndAbandonsCancelledOnes(t *testing.T) {
	storage := startServer(t)
	c := storage.client()
	d, schedulerAddress := startSchedulerDouble(t)
	workerID := map[string]string{"test": "run-and-cancel"}
	w := startClusterWorker(t, storage.address, schedulerAddress, workerID)
	waitForStage(t, d, workerID, "idle")
	if request := d.Requests(workerID)[0]; !proto.Equal(request.Platform, clusterPlatform) || request.SizeClass != 0 || request.InstanceNamePrefix != "" {
		t.Errorf("registered with %v", request)
	}

	// An action as bb_scheduler hands it out: inline, with the
	// client's auxiliary metadata and the time it was queued.
	actionDigest := c.newAction(action{
		args:        sh(`tr a-z A-Z < in/greeting > out/shout.txt && echo ran && echo warned >&2`),
		outputPaths: []string{"out/shout.txt"},
		platform:    map[string]string{"OSFamily": "linux"},
		input:       c.tree(map[string]entry{"in/greeting": {content: "hello cluster\n"}}),
	})
	task := clusterTask(t, c, actionDigest)
	auxiliary, err := anypb.New(&remoteexecution.RequestMetadata{ToolInvocationId: "e2e-invocation"})
	if err != nil {
		t.Fatal(err)
	}
	task.Auxiliary = []*anypb.Any{auxiliary}
	d.Enqueue(task)
	response := waitForCompletion(t, d, actionDigest)
	if st := status.FromProto(response.Status); st.Code() != codes.OK || response.Result.GetExitCode() != 0 {
		t.Fatalf("completed with %v, exit %d", st.Err(), response.Result.GetExitCode())
	}
	result := response.Result
	if got := string(c.read(result.StdoutDigest)); got != "ran\n" {
		t.Errorf("stdout %q", got)
	}
	if got := string(c.read(result.StderrDigest)); got != "warned\n" {
		t.Errorf("stderr %q", got)
	}
	if len(result.OutputFiles) != 1 || result.OutputFiles[0].Path != "out/shout.txt" || string(c.read(result.OutputFiles[0].Digest)) != "HELLO CLUSTER\n" {
		t.Errorf("outputs %v", result.OutputFiles)
	}
	metadata := result.ExecutionMetadata
	if metadata.GetWorker() != `{"test":"run-and-cancel"}` {
		t.Errorf("worker name %q, want the slot's worker ID as bb_worker renders it", metadata.GetWorker())
	}
	if !proto.Equal(metadata.GetQueuedTimestamp(), task.Queued) {
		t.Errorf("queued timestamp %v, want the scheduler's %v", metadata.GetQueuedTimestamp(), task.Queued)
	}
	n := 0
	for _, a := range metadata.GetAuxiliaryMetadata() {
		if proto.Equal(a, auxiliary) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the scheduler's auxiliary metadata appears %d times in %v", n, metadata.GetAuxiliaryMetadata())
	}
	for _, ts := range []interface{ IsValid() bool }{metadata.GetWorkerStartTimestamp(), metadata.GetInputFetchStartTimestamp(), metadata.GetExecutionStartTimestamp(), metadata.GetOutputUploadCompletedTimestamp(), metadata.GetWorkerCompletedTimestamp()} {
		if !ts.IsValid() {
			t.Errorf("stage timestamps missing: %v", metadata)
			break
		}
	}
	// The worker wrote the Action Cache entry, as bb_worker does.
	cached, err := c.ac.GetActionResult(context.Background(), &remoteexecution.GetActionResultRequest{ActionDigest: actionDigest})
	if err != nil {
		t.Fatalf("no Action Cache entry: %v", err)
	}
	if !proto.Equal(cached, result) {
		t.Errorf("Action Cache holds %v, the scheduler was told %v", cached, result)
	}

	// Prometheus metrics and health, on the diagnostics server.
	if code, _ := httpGet(t, "http://"+w.metricsAddr+"/-/healthy"); code != http.StatusOK {
		t.Errorf("/-/healthy: %d", code)
	}
	_, metrics := httpGet(t, "http://"+w.metricsAddr+"/metrics")
	for _, want := range []string{
		`bitzel_cluster_actions_total{outcome="succeeded"} 1`,
		"bitzel_cluster_slots 1",
		"bitzel_cluster_slots_failing 0",
		"bitzel_cluster_synchronizations_total",
		`bitzel_executor_actions_completed_total{exit="zero",grpc_code="OK"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A long action the clients give up on: the double tells the
	// worker to go idle at its next report, and the worker kills it.
	long := c.newAction(action{args: []string{"sleep", "6123"}, platform: map[string]string{"OSFamily": "linux"}, doNotCache: true})
	longTask := d.Enqueue(clusterTask(t, c, long))
	waitUntil(t, "the action to start", func() bool { return len(processesRunning("sleep", "6123")) > 0 })
	sleeping := processesRunning("sleep", "6123")
	d.Cancel(longTask)
	waitUntil(t, "the cancelled action's processes to die", func() bool {
		for _, pid := range sleeping {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				return false
			}
		}
		return true
	})
	// Idle again, and nothing reported for the abandoned action.
	key := schedulertest.WorkerKey(workerID)
	d.WaitFor(t, "the worker to report idle after the cancellation", func(requests map[string][]*remoteworker.SynchronizeRequest, _ []schedulertest.Completion) bool {
		last := requests[key][len(requests[key])-1]
		return testsupport.SynchronizeStage(last) == "idle"
	})
	for _, completion := range d.Completed() {
		if proto.Equal(completion.Digest, long) {
			t.Errorf("the abandoned action was reported: %v", completion.Response)
		}
	}
	waitUntil(t, "the abandonment to be counted", func() bool {
		_, metrics := httpGet(t, "http://"+w.metricsAddr+"/metrics")
		return strings.Contains(metrics, `bitzel_cluster_actions_total{outcome="abandoned"} 1`)
	})

	// The slot takes work again.
	again := c.newAction(action{args: sh(`echo again`), platform: map[string]string{"OSFamily": "linux"}})
	d.Enqueue(clusterTask(t, c, again))
	if response := waitForCompletion(t, d, again); response.Result.GetExitCode() != 0 || string(c.read(response.Result.StdoutDigest)) != "again\n" {
		t.Errorf("after the cancellation: %v", response)
	}
}

func TestClusterWorkerDrainsOnSIGTERM(t *testing.T) {
	mountsBefore := ownMounts(t)
	storage := startServer(t)
	c := storage.client()
	d, schedulerAddress := startSchedulerDouble(t)
	workerID := map[string]string{"test": "drain"}
	w := startClusterWorker(t, storage.address, schedulerAddress, workerID)
	waitForStage(t, d, workerID, "idle")

	actionDigest := c.newAction(action{
		args:        sh(`sleep 3 && echo finished > out.txt`),
		outputPaths: []string{"out.txt"},
		platform:    map[string]string{"OSFamily": "linux"},
	})
	d.Enqueue(clusterTask(t, c, actionDigest))
	waitForStage(t, d, workerID, "running")
	ours := sandboxProcesses(t, w.cmd.Process.Pid)
	if len(ours) == 0 {
		t.Fatal("no sandbox of the worker found while an action runs")
	}

	signalled := time.Now()
	w.cmd.Process.Signal(syscall.SIGTERM)
	// Work queued now stays queued: a draining worker asks for none.
	other := c.newAction(action{args: sh(`echo not taken`), platform: map[string]string{"OSFamily": "linux"}})
	d.Enqueue(clusterTask(t, c, other))

	response := waitForCompletion(t, d, actionDigest)
	if response.Result.GetExitCode() != 0 || len(response.Result.OutputFiles) != 1 || string(c.read(response.Result.OutputFiles[0].Digest)) != "finished\n" {
		t.Errorf("the running action did not finish normally: %v", response)
	}
	w.waitExited(t)
	if elapsed := time.Since(signalled); elapsed > 60*time.Second {
		t.Errorf("draining took %v", elapsed)
	}

	// After the signal, every request said prefer_being_idle, and
	// the last one reported the completion: the scheduler answered it
	// with "idle" and the worker stopped.
	requests := d.Requests(workerID)
	var afterSignal []*remoteworker.SynchronizeRequest
	for i, request := range requests {
		if request.PreferBeingIdle {
			afterSignal = requests[i:]
			break
		}
	}
	if len(afterSignal) == 0 {
		t.Fatal("the worker never asked for no more work")
	}
	for _, request := range afterSignal {
		if !request.PreferBeingIdle {
			t.Errorf("a request after the drain began did not prefer being idle: %v", request)
		}
	}
	if last := afterSignal[len(afterSignal)-1]; testsupport.SynchronizeStage(last) != "completed" {
		t.Errorf("the last request reported %s, want the completion", testsupport.SynchronizeStage(last))
	}
	if d.Queued() != 1 {
		t.Errorf("%d tasks queued, want the one queued during the drain", d.Queued())
	}

	// Nothing left behind: no sandbox process, no mount.
	for _, pid := range ours {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("sandbox process %d outlived the worker", pid)
		}
	}
	reportMountChanges(t, filepath.Join(os.TempDir(), "bitzel-*"), mountsBefore, ownMounts(t))
}

func TestClusterWorkerRefusesUnsupportedStorage(t *testing.T) {
	dir := t.TempDir()
	configPath := filepath.Join(dir, "worker.jsonnet")
	// Jsonnet, as operators write it: a local variable and a
	// backend bitzel-worker does not link.
	config := `local address = '127.0.0.1:1';
{
  blobstore: {
    contentAddressableStorage: { sharding: { shards: {} } },
    actionCache: { grpc: { client: { address: address } } },
  },
  scheduler: { address: address },
  runners: [{ concurrency: 1 }],
}
`
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(binaries(t), "bitzel-worker"), "worker", "--config", configPath).CombinedOutput()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 1 {
		t.Fatalf("worker exited with %v:\n%s", err, out)
	}
	if !strings.Contains(string(out), "blobstore.contentAddressableStorage") || !strings.Contains(string(out), "not supported") {
		t.Errorf("the error does not say which backend is refused:\n%s", out)
	}
}

func TestServeTakesAConfigurationFileAndFlagsOverrideIt(t *testing.T) {
	configPath, diagnostics := serveConfigWithDiagnostics(t, `
  // Overridden by the --listen flag the test helper passes.
  listenAddress: '127.0.0.1:1',
  workerName: 'from-the-file',`, "")
	s := startServer(t, "--config", configPath)
	result := s.client().run(action{args: sh(`echo configured`)})
	if got := result.ExecutionMetadata.GetWorker(); got != "from-the-file" {
		t.Errorf("worker name %q, want the file's", got)
	}
	if code, _ := httpGet(t, "http://"+diagnostics+"/-/healthy"); code != http.StatusOK {
		t.Errorf("diagnostics /-/healthy: %d", code)
	}
	if _, metrics := httpGet(t, "http://"+diagnostics+"/metrics"); !strings.Contains(metrics, "bitzel_executor_actions_completed_total") {
		t.Error("diagnostics /metrics lacks the executor's metrics")
	}
}
