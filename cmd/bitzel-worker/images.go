package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bitzel/bitzel-worker/images"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/layers"
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
	for ref, p := range sources {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("container image %s: %w", ref, err)
		}
		sources[ref] = abs
	}
	// Earlier versions extracted layers into DATA/images, outside any
	// budget; they are in the layer cache now.
	if err := fsutil.RemoveAll(filepath.Join(f.dataDir, "images")); err != nil {
		return nil, fmt.Errorf("container images: remove the layers of an earlier version: %w", err)
	}
	store, err := images.NewStore(cache, sources)
	if err != nil {
		return nil, fmt.Errorf("container images: %w", err)
	}
	return store, nil
}
