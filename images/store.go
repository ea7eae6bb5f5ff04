package images

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/buildbarn/bb-storage/pkg/util"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PlatformProperty is the platform property naming an action's image.
const PlatformProperty = "container-image"

// HowToProvide is the advice given for an image that is not available.
const HowToProvide = "give serve --container-image docker://NAME:TAG=/path/to/oci-layout-or-docker-save.tar (or containerImages in the Jsonnet configuration); images are never pulled"

// Image is an image placed for actions.
type Image struct {
	// Layers are the extracted layers as overlay lowerdirs, topmost
	// first.
	Layers []string
	// WorkingDir is the image configuration's WorkingDir, "" if none.
	WorkingDir string
}

// Store maps image names to local sources and extracts their layers,
// once each, into a directory of the worker's data directory.
type Store struct {
	sources map[string]string
	dir     string

	mu       sync.Mutex
	resolved map[string]*Image
	// byDigest maps the manifest digests of the configured OCI
	// layouts to their source, listed at the first reference by a
	// digest not configured as such; archives counts the sources that
	// are not layouts.
	byDigest map[string]string
	archives int
	building map[string]*sync.Mutex
	builds   atomic.Int64
}

// NewStore creates a Store whose layers live in dir; sources maps
// "docker://NAME[:TAG|@DIGEST]" to an OCI layout directory or a
// docker save archive. A partly built layer left by a crash is
// removed here: only renamed (finished) layers are ever served.
func NewStore(dir string, sources map[string]string) (*Store, error) {
	registerMetrics()
	s := &Store{sources: map[string]string{}, dir: dir, resolved: map[string]*Image{}, building: map[string]*sync.Mutex{}}
	for ref, src := range sources {
		key, err := Normalize(ref)
		if err != nil {
			return nil, err
		}
		s.sources[key] = src
	}
	if err := fsutil.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
		return nil, fmt.Errorf("remove unfinished image layers: %w", err)
	}
	for _, d := range []string{"layers", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Normalize gives the key under which an image reference is looked up:
// "docker://" followed by the reference as go-containerregistry names
// it in full (index.docker.io/library/busybox:latest for busybox).
func Normalize(ref string) (string, error) {
	rest, ok := strings.CutPrefix(ref, "docker://")
	if !ok {
		return "", status.Errorf(codes.InvalidArgument, "Container image %q does not start with docker://", ref)
	}
	r, err := name.ParseReference(rest)
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "Container image %q: %v", ref, err)
	}
	return "docker://" + r.Name(), nil
}

// Check is nil for an image that is configured, else the error an
// action naming ref is refused with (platform matching calls it).
func (s *Store) Check(ref string) error {
	key, err := Normalize(ref)
	if err != nil {
		return err
	}
	_, err = s.sourceFor(ref, key)
	return err
}

// sourceFor returns the source configured for key. A reference by
// digest (NAME@sha256:...) names content, not a place: it is served
// from any configured OCI layout that holds a manifest of that digest,
// whatever name the operator gave it (Bazel's remote configurations
// pin images by digest, operators name them by tag).
func (s *Store) sourceFor(ref, key string) (string, error) {
	if src := s.sources[key]; src != "" {
		return src, nil
	}
	d, ok := digestOf(key)
	if !ok {
		return "", notAvailable(ref)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byDigest == nil {
		s.byDigest, s.archives = map[string]string{}, 0
		for _, src := range s.sources {
			digests, err := layoutManifests(src)
			if err != nil {
				s.archives++
				continue
			}
			for _, m := range digests {
				s.byDigest[m] = src
			}
		}
	}
	if src := s.byDigest[d]; src != "" {
		return src, nil
	}
	if s.archives > 0 {
		return "", status.Errorf(codes.FailedPrecondition, "Container image %q is not available on this worker: no configured OCI image layout holds a manifest of digest %s, and a docker save archive does not record manifest digests; to provide it, give its OCI layout (for example from skopeo copy docker://... oci:DIR), or name the image by tag: %s", ref, d, HowToProvide)
	}
	return "", status.Errorf(codes.FailedPrecondition, "Container image %q is not available on this worker: no configured OCI image layout holds a manifest of digest %s; to provide it, %s", ref, d, HowToProvide)
}

// digestOf returns the digest of a key that names an image by digest.
func digestOf(key string) (string, bool) {
	d, err := name.NewDigest(strings.TrimPrefix(key, "docker://"))
	if err != nil {
		return "", false
	}
	return d.DigestStr(), true
}

// layoutManifests lists the manifest digests of the OCI image layout
// src; an error when src is not one.
func layoutManifests(src string) ([]string, error) {
	p, err := layout.FromPath(src)
	if err != nil {
		return nil, err
	}
	index, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		return nil, err
	}
	var digests []string
	for _, m := range manifest.Manifests {
		digests = append(digests, m.Digest.String())
	}
	return digests, nil
}

func notAvailable(ref string) error {
	return status.Errorf(codes.FailedPrecondition, "Container image %q is not available on this worker; to provide it, %s", ref, HowToProvide)
}

// Builds is how many layers this Store has extracted.
func (s *Store) Builds() int64 { return s.builds.Load() }

// Get returns the image ref, extracting its layers the first time. A
// second call for the same image costs a map look-up.
func (s *Store) Get(ref string) (*Image, error) {
	key, err := Normalize(ref)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	img := s.resolved[key]
	s.mu.Unlock()
	if img != nil {
		imagePlacements.Inc()
		return img, nil
	}
	src, err := s.sourceFor(ref, key)
	if err != nil {
		return nil, err
	}
	image, err := load(src, key)
	if err != nil {
		return nil, err
	}
	layers, err := image.Layers()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "Container image %q from %q: %v", ref, src, err)
	}
	img = &Image{}
	if cfg, err := image.ConfigFile(); err == nil && cfg != nil {
		img.WorkingDir = cfg.Config.WorkingDir
	}
	// Image layers are listed bottom first; lowerdirs topmost first.
	for i := len(layers) - 1; i >= 0; i-- {
		p, err := s.layer(layers[i])
		if err != nil {
			return nil, util.StatusWrapf(err, "Container image %q from %q", ref, src)
		}
		img.Layers = append(img.Layers, p)
	}
	s.mu.Lock()
	s.resolved[key] = img
	s.mu.Unlock()
	imagePlacements.Inc()
	return img, nil
}

// load opens an OCI layout directory or a docker save archive.
func load(src, key string) (v1.Image, error) {
	info, err := os.Stat(src)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "Container image source %q: %v", src, err)
	}
	if !info.IsDir() {
		if d, ok := digestOf(key); ok {
			return nil, status.Errorf(codes.FailedPrecondition, "Container image %s is named by digest, but its source %q is a docker save archive, which does not record manifest digests, so the digest cannot be checked: configure it by tag, or give its OCI layout (for example from skopeo copy docker-archive:%s oci:DIR)", d, src, src)
		}
		var tag *name.Tag
		if t, err := name.NewTag(strings.TrimPrefix(key, "docker://")); err == nil {
			tag = &t
		}
		img, err := tarball.ImageFromPath(src, tag)
		if err != nil && tag != nil {
			// An archive of a single image needs no tag.
			img, err = tarball.ImageFromPath(src, nil)
		}
		if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "Container image source %q is not a docker save archive: %v", src, err)
		}
		return img, nil
	}
	p, err := layout.FromPath(src)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "Container image source %q is not an OCI image layout: %v", src, err)
	}
	index, err := p.ImageIndex()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "Container image source %q: %v", src, err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "Container image source %q: %v", src, err)
	}
	// The layout's image for this name: the manifest of its digest,
	// the one annotated with its tag, or the only one.
	if d, ok := digestOf(key); ok {
		for i, m := range manifest.Manifests {
			if m.Digest.String() == d {
				return imageOf(index, src, &manifest.Manifests[i])
			}
		}
		return nil, status.Errorf(codes.FailedPrecondition, "Container image source %q holds no manifest of digest %s", src, d)
	}
	tag := ""
	if t, err := name.NewTag(strings.TrimPrefix(key, "docker://")); err == nil {
		tag = t.TagStr()
	}
	var chosen *v1.Descriptor
	for i, d := range manifest.Manifests {
		if r := d.Annotations["org.opencontainers.image.ref.name"]; r != "" && (r == tag || strings.HasSuffix(r, ":"+tag)) {
			chosen = &manifest.Manifests[i]
			break
		}
	}
	if chosen == nil && len(manifest.Manifests) == 1 {
		chosen = &manifest.Manifests[0]
	}
	if chosen == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "Container image source %q holds %d images, none annotated with tag %q", src, len(manifest.Manifests), tag)
	}
	return imageOf(index, src, chosen)
}

func imageOf(index v1.ImageIndex, src string, d *v1.Descriptor) (v1.Image, error) {
	img, err := index.Image(d.Digest)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "Container image source %q: %v", src, err)
	}
	return img, nil
}

// layer returns the extracted layer, content-addressed by its diff ID
// (the digest of its uncompressed tarball, which the image's
// configuration lists and which is verified while extracting). It is
// built in tmp/ and renamed into layers/ when complete.
func (s *Store) layer(l v1.Layer) (string, error) {
	diffID, err := l.DiffID()
	if err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "Layer has no diff ID: %v", err)
	}
	final := filepath.Join(s.dir, "layers", diffID.Algorithm+"-"+diffID.Hex)
	s.mu.Lock()
	m := s.building[final]
	if m == nil {
		m = &sync.Mutex{}
		s.building[final] = m
	}
	s.mu.Unlock()
	m.Lock()
	defer m.Unlock()
	if _, err := os.Lstat(final); err == nil {
		return final, nil
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "layer-")
	if err != nil {
		return "", status.Errorf(codes.Internal, "Failed to create a layer directory: %v", err)
	}
	ok := false
	defer func() {
		if !ok {
			fsutil.RemoveAll(tmp)
		}
	}()
	// MkdirTemp makes it 0700; an action running as another user
	// must see the layer's root (a "./" entry may still set it).
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", status.Errorf(codes.Internal, "Failed to create a layer directory: %v", err)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "Layer %s: %v", diffID, err)
	}
	defer rc.Close()
	h := sha256.New()
	if err := Extract(io.TeeReader(rc, h), tmp); err != nil {
		return "", err
	}
	// The rest of the stream (tar padding) is part of the digest.
	if _, err := io.Copy(h, rc); err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "Layer %s: %v", diffID, err)
	}
	if diffID.Algorithm == "sha256" {
		if got := hex.EncodeToString(h.Sum(nil)); got != diffID.Hex {
			return "", status.Errorf(codes.FailedPrecondition, "Layer %s has digest sha256:%s: the image is corrupt", diffID, got)
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", status.Errorf(codes.Internal, "Failed to install layer %s: %v", diffID, err)
	}
	ok = true
	s.builds.Add(1)
	layersExtracted.Inc()
	return final, nil
}
