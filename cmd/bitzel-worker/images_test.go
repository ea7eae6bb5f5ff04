package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

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
