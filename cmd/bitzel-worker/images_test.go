package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/proto/configuration"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestContainerImageFlag(t *testing.T) {
	var f containerImageFlag
	for _, bad := range []string{"busybox=/x", "docker://busybox", "docker://busybox=", "docker://UPPER:1=/x"} {
		if err := f.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	// The first "=" ends the reference; the path may hold more.
	if err := f.Set("docker://busybox@sha256:" + strings.Repeat("a", 64) + "=/srv/a=b"); err != nil {
		t.Fatal(err)
	}
	if got := f["docker://busybox@sha256:"+strings.Repeat("a", 64)]; got != "/srv/a=b" {
		t.Errorf("path %q", got)
	}
}

// TestOpenContainerImages: the Jsonnet field and the flags both
// configure images (the flag winning for the same name), and an image
// in neither is refused with the flag to give.
func TestOpenContainerImages(t *testing.T) {
	f := &serveFlags{serveConfig: &configuration.ServeConfiguration{
		ContainerImages: map[string]string{"docker://from-config:1": "/srv/config", "docker://both:1": "/srv/config"},
	}}
	f.dataDir = t.TempDir()
	f.containerImages = containerImageFlag{"docker://from-flag:1": "relative", "docker://both:1": "/srv/flag"}
	store, err := openContainerImages(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"docker://from-config:1", "docker://from-flag:1", "docker://both:1"} {
		if err := store.Check(ref); err != nil {
			t.Errorf("%s: %v", ref, err)
		}
	}
	err = store.Check("docker://other:1")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--container-image") {
		t.Errorf("unconfigured image: %v", err)
	}
	if _, err := store.Get(context.Background(), "docker://both:1"); err == nil || !strings.Contains(err.Error(), "/srv/flag") {
		t.Errorf("the flag should win over the configuration: %v", err)
	}
	if _, err := store.Get(context.Background(), "docker://from-flag:1"); err == nil || !strings.Contains(err.Error(), filepath.Join(mustGetwd(t), "relative")) {
		t.Errorf("a relative path is taken from the working directory: %v", err)
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// TestWorkerContainerImages: a runner may offer only configured images
// (by any spelling of the same reference); one offering an image that
// containerImages lacks stops the worker at start-up with a message
// naming the runner, the image and the field.
func TestWorkerContainerImages(t *testing.T) {
	runner := func(images ...string) *configuration.RunnerConfiguration {
		platform := &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{{Name: "OSFamily", Value: "linux"}}}
		for _, image := range images {
			platform.Properties = append(platform.Properties, &remoteexecution.Platform_Property{Name: "container-image", Value: image})
		}
		return &configuration.RunnerConfiguration{Platform: platform}
	}
	dataDir := t.TempDir()
	// What an earlier version left is removed, as serve does.
	if err := os.MkdirAll(filepath.Join(dataDir, "images", "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := &configuration.WorkerConfiguration{
		ContainerImages: map[string]string{"docker://busybox": "/srv/busybox", "docker://example.org/tools:1": "relative"},
		Runners:         []*configuration.RunnerConfiguration{runner(), runner("docker://index.docker.io/library/busybox:latest", "docker://example.org/tools:1")},
	}
	store, err := openWorkerContainerImages(c, dataDir, nil)
	if err != nil {
		t.Fatalf("configured images refused: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "images")); !os.IsNotExist(err) {
		t.Errorf("DATA/images of an earlier version is still there: %v", err)
	}
	if _, err := store.Get(context.Background(), "docker://example.org/tools:1"); err == nil || !strings.Contains(err.Error(), filepath.Join(mustGetwd(t), "relative")) {
		t.Errorf("a relative path is taken from the working directory: %v", err)
	}
	if err := store.Check("docker://other:1"); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("unconfigured image: %v", err)
	}

	c.Runners = append(c.Runners, runner("docker://example.org/tools:1", "docker://ubuntu:22.04"))
	_, err = openWorkerContainerImages(c, dataDir, nil)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a runner offering an unconfigured image: %v, want INVALID_ARGUMENT", err)
	}
	for _, want := range []string{"runners[2]", `container-image="docker://ubuntu:22.04"`, "containerImages"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not name %s", err, want)
		}
	}

	// Without containerImages, no runner may offer an image.
	c = &configuration.WorkerConfiguration{Runners: []*configuration.RunnerConfiguration{runner("docker://busybox")}}
	if _, err := openWorkerContainerImages(c, dataDir, nil); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "runners[0]") {
		t.Errorf("an image offered with no containerImages: %v", err)
	}
	c.ContainerImages = map[string]string{"busybox": "/srv/busybox"}
	if _, err := openWorkerContainerImages(c, dataDir, nil); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "containerImages") {
		t.Errorf("a reference without docker://: %v", err)
	}
}
