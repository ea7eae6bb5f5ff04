package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bitzel/bitzel-worker/images"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/proto/configuration"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// containerImageFlag is serve's --container-image, repeatable:
// docker://NAME[:TAG|@DIGEST]=PATH. A reference has no "=", so the
// first one ends it and the path may hold more.
type containerImageFlag map[string]string

func (f *containerImageFlag) String() string {
	var parts []string
	for ref, p := range *f {
		parts = append(parts, ref+"="+p)
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func (f *containerImageFlag) Set(value string) error {
	ref, p, ok := strings.Cut(value, "=")
	if !ok || p == "" {
		return fmt.Errorf("%q is not docker://NAME[:TAG|@DIGEST]=PATH", value)
	}
	if _, err := images.Normalize(ref); err != nil {
		return err
	}
	if *f == nil {
		*f = containerImageFlag{}
	}
	(*f)[ref] = p
	return nil
}

// openContainerImages is serve's image store, whose layers go to the
// layer cache: the configuration file's containerImages, then the
// flags'. Relative paths are taken from the working directory serve
// started in.
func openContainerImages(f *serveFlags, cache layers.LayerCache) (*images.Store, error) {
	sources := map[string]string{}
	for ref, p := range f.serveConfig.GetContainerImages() {
		sources[ref] = p
	}
	for ref, p := range f.containerImages {
		sources[ref] = p
	}
	return openImageStore(sources, f.dataDir, cache)
}

// openWorkerContainerImages is the image store of `worker`, from its
// configuration's containerImages, on the layer cache every runner's
// slots share; relative paths as for serve. Every container-image a
// runner's platform offers must be one of them: bb_scheduler routes
// actions naming that image to the runner, and a worker that could
// only refuse them is misconfigured, which is better said at start-up
// than on every action.
func openWorkerContainerImages(c *configuration.WorkerConfiguration, dataDir string, cache layers.LayerCache) (*images.Store, error) {
	store, err := openImageStore(c.GetContainerImages(), dataDir, cache)
	if err != nil {
		return nil, err
	}
	if err := checkRunnerImages(c.GetRunners(), store); err != nil {
		return nil, err
	}
	return store, nil
}

// checkRunnerImages is nil when every container-image property in the
// runners' platforms names an image store holds, else an
// INVALID_ARGUMENT naming the runner, the image and the field that
// provides it.
func checkRunnerImages(runners []*configuration.RunnerConfiguration, store *images.Store) error {
	for i, runner := range runners {
		for _, p := range runner.GetPlatform().GetProperties() {
			if p.Name != worker.ContainerImageProperty {
				continue
			}
			if err := store.Check(p.Value); err != nil {
				return status.Errorf(codes.InvalidArgument, "runners[%d].platform offers %s=%q, which is not a configured image: map it to an OCI image layout directory or a docker save archive in containerImages of the worker configuration, or remove it from the runner's platform (%v)", i, p.Name, p.Value, status.Convert(err).Message())
			}
		}
	}
	return nil
}

// openImageStore opens a Store over cache for sources, which maps
// references to paths, made absolute here.
func openImageStore(configured map[string]string, dataDir string, cache layers.LayerCache) (*images.Store, error) {
	sources := make(map[string]string, len(configured))
	for ref, p := range configured {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("container image %s: %w", ref, err)
		}
		sources[ref] = abs
	}
	// Earlier versions extracted layers into DATA/images, outside any
	// budget; they are in the layer cache now.
	if err := fsutil.RemoveAll(filepath.Join(dataDir, "images")); err != nil {
		return nil, fmt.Errorf("container images: remove the layers of an earlier version: %w", err)
	}
	store, err := images.NewStore(cache, sources)
	if err != nil {
		return nil, util.StatusWrap(err, "containerImages")
	}
	return store, nil
}
