package e2e

// Container images in cluster mode: `bitzel-worker worker` whose runner
// offers container-image=docker://... (bb_scheduler routes by exact
// platform) and whose containerImages maps it to a local image.

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/images/imagetest"
	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"github.com/bitzel/bitzel-worker/worker/cluster/schedulertest"
	"github.com/buildbarn/bb-storage/pkg/clock"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// startImageClusterWorker starts a worker as startClusterWorker does,
// with one slot whose runner offers platform, and containerImages.
// The caller stops it or waits for it to exit.
func startImageClusterWorker(t *testing.T, storageAddress, schedulerAddress string, workerID map[string]string, platform *remoteexecution.Platform, containerImages map[string]string) *clusterWorker {
	t.Helper()
	dir, err := os.MkdirTemp("", "bitzel-e2e-cluster-image-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	w := &clusterWorker{t: t, workerID: workerID, metricsAddr: freeAddress(t), exited: make(chan struct{})}
	var properties []any
	for _, p := range platform.Properties {
		properties = append(properties, map[string]any{"name": p.Name, "value": p.Value})
	}
	config := map[string]any{
		"blobstore": map[string]any{
			"contentAddressableStorage": map[string]any{"grpc": map[string]any{"client": map[string]any{"address": storageAddress}}},
			"actionCache":               map[string]any{"grpc": map[string]any{"client": map[string]any{"address": storageAddress}}},
		},
		"scheduler": map[string]any{"address": schedulerAddress},
		"executor": map[string]any{
			"dataDirectoryPath": filepath.Join(dir, "data"),
			"sandbox":           map[string]any{"warmSandboxes": 1},
		},
		"runners": []any{map[string]any{
			"concurrency": 1,
			"platform":    map[string]any{"properties": properties},
			"workerId":    workerID,
		}},
		"containerImages": containerImages,
	}
	return runClusterWorker(t, w, dir, config)
}

// imagePlatform is OSFamily=linux and container-image=ref, sorted.
func imagePlatform(ref string) *remoteexecution.Platform {
	return &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{
		{Name: "OSFamily", Value: "linux"},
		{Name: "container-image", Value: ref},
	}}
}

// TestClusterWorkerRunsActionsOnContainerImages: an action routed to a
// runner offering an image runs with the image's root file system as
// its "/" (its files, the upper layer's whiteout honoured) under the
// input root; an offered image that fails to load fails its actions
// with FAILED_PRECONDITION; a runner offering an image that
// containerImages lacks keeps the worker from starting.
// Long on purpose: one scenario whose steps build on each other (each
// needs the state the previous left), read top to bottom.
func TestClusterWorkerRunsActionsOnContainerImages(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	layoutDir, archive := imagetest.WriteSources(t, dir, "example.org/saved:1", busyboxImage(t))
	storage := startServer(t)
	c := storage.client()
	input := c.tree(map[string]entry{"input.txt": {content: "from the input root\n"}})
	script := "cat /etc/os-release /input.txt /etc/added; test -e /etc/gone && echo gone-visible; echo out > /out.txt"
	want := "ID=test-image\nfrom the input root\nupper layer\n"

	for _, image := range []struct{ ref, source string }{
		{"docker://example.org/tools:1", layoutDir},
		{"docker://example.org/saved:1", archive},
	} {
		t.Run(filepath.Base(image.source), func(t *testing.T) {
			platform := imagePlatform(image.ref)
			d := schedulertest.New(clock.SystemClock, platform, 0)
			d.RealTimeLimit = 90 * time.Second
			schedulerAddress := serveSchedulerDouble(t, d)
			workerID := map[string]string{"test": "cluster-image"}
			w := startImageClusterWorker(t, storage.address, schedulerAddress, workerID, platform, map[string]string{image.ref: image.source})
			waitForStage(t, d, workerID, "idle")
			actionDigest := c.newAction(action{
				args:        sh(script),
				input:       input,
				outputFiles: []string{"out.txt"},
				platform:    map[string]string{"OSFamily": "linux", "container-image": image.ref},
			})
			d.Enqueue(clusterTask(t, c, actionDigest))
			response := waitForCompletion(t, d, actionDigest)
			if st := status.FromProto(response.Status); st.Code() != codes.OK {
				t.Fatalf("completed with %v", st.Err())
			}
			result := response.Result
			if got := string(c.read(result.StdoutDigest)); got != want || result.ExitCode != 0 {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %q", result.ExitCode, got, c.read(result.StderrDigest), want)
			}
			if len(result.OutputFiles) != 1 || string(c.read(result.OutputFiles[0].Digest)) != "out\n" {
				t.Errorf("outputs %v", result.OutputFiles)
			}
			w.stop()
		})
	}

	t.Run("ImageFailsToLoad", func(t *testing.T) {
		ref := "docker://example.org/missing:1"
		platform := imagePlatform(ref)
		d := schedulertest.New(clock.SystemClock, platform, 0)
		d.RealTimeLimit = 90 * time.Second
		schedulerAddress := serveSchedulerDouble(t, d)
		workerID := map[string]string{"test": "cluster-image-missing"}
		startImageClusterWorker(t, storage.address, schedulerAddress, workerID, platform, map[string]string{ref: filepath.Join(dir, "no-such-image")})
		waitForStage(t, d, workerID, "idle")
		actionDigest := c.newAction(action{args: []string{"/bin/true"}, input: input, platform: map[string]string{"OSFamily": "linux", "container-image": ref}})
		d.Enqueue(clusterTask(t, c, actionDigest))
		response := waitForCompletion(t, d, actionDigest)
		if st := status.FromProto(response.Status); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "no-such-image") {
			t.Errorf("completed with %v, want FAILED_PRECONDITION naming the source", st.Err())
		}
	})

	t.Run("UnconfiguredImageRefused", func(t *testing.T) {
		ref := "docker://example.org/unconfigured:1"
		d := schedulertest.New(clock.SystemClock, imagePlatform(ref), 0)
		schedulerAddress := serveSchedulerDouble(t, d)
		w := startImageClusterWorker(t, storage.address, schedulerAddress, map[string]string{"test": "cluster-image-refused"}, imagePlatform(ref),
			map[string]string{"docker://example.org/tools:1": layoutDir})
		select {
		case <-w.exited:
		case <-time.After(60 * time.Second):
			t.Fatalf("the worker started with a runner offering an unconfigured image:\n%s", w.logs())
		}
		if w.cmd.ProcessState.Success() {
			t.Errorf("exit status 0, want a refusal")
		}
		logs := w.logs()
		for _, want := range []string{"runners[0]", ref, "containerImages"} {
			if !strings.Contains(logs, want) {
				t.Errorf("the refusal does not name %s:\n%s", want, logs)
			}
		}
	})
}

// serveSchedulerDouble serves d on a loopback port, as
// startSchedulerDouble does for the double of clusterPlatform.
func serveSchedulerDouble(t *testing.T, d *schedulertest.Scheduler) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	remoteworker.RegisterOperationQueueServer(server, d)
	go server.Serve(listener)
	t.Cleanup(server.Stop)
	return listener.Addr().String()
}
