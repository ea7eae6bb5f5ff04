package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// What an operator ran into with docker/: a frontend fetched from a
// registry, ports open on every interface without authentication, a
// container shm_size that never reached actions, a .dockerignore only
// BuildKit read, and two names for the image.
func TestDockerFilesWorkOfflineAndPublishOnLoopback(t *testing.T) {
	read := func(name string) string {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	dockerfile, compose := read("../../docker/Dockerfile"), read("../../docker/compose.yaml")
	if strings.Contains(dockerfile, "# syntax=") {
		t.Error("docker/Dockerfile has a syntax line: BuildKit fetches that frontend from a registry")
	}
	if _, err := os.Stat("../../.dockerignore"); err != nil {
		t.Errorf("no .dockerignore at the build context's root (the classic builder reads only that one): %v", err)
	}
	ports := regexp.MustCompile(`(?m)^\s+- "([^"]*:\d+)"`).FindAllStringSubmatch(compose, -1)
	if len(ports) == 0 {
		t.Fatal("compose.yaml publishes no ports")
	}
	for _, p := range ports {
		if !strings.HasPrefix(p[1], "${BITZEL_PUBLISH_ADDRESS:-127.0.0.1}:") {
			t.Errorf("compose.yaml publishes %s beyond 127.0.0.1 by default", p[1])
		}
	}
	if strings.Contains(compose, "\n  shm_size:") || strings.Contains(compose, "\n    shm_size:") {
		t.Error("compose.yaml sets shm_size, which never reaches an action's /dev/shm")
	}
	image := regexp.MustCompile(`(?m)^  image: (\S+)`).FindStringSubmatch(compose)
	if image == nil || !strings.Contains(dockerfile, "-t "+image[1]+" ") {
		t.Errorf("the Dockerfile's header does not tag the image compose runs (%v)", image)
	}
}
