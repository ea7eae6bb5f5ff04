package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"

	"github.com/bitzel/bitzel-worker/layers"
	"github.com/buildbarn/bb-storage/pkg/digest"
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

// Image is an image placed for one action: leases on its extracted
// layers, which the layer cache keeps until they are released.
type Image struct {
	// Layers are the extracted layers, topmost first; Path of each is
	// an overlay lowerdir.
	Layers []layers.LayerLease
	// WorkingDir is the image configuration's WorkingDir, "" if none.
	WorkingDir string
}

// Release drops the leases on the image's layers.
func (i *Image) Release() {
	for _, l := range i.Layers {
		l.Release()
	}
}

// resolved is what is known of a configured image once its manifest
// has been read: its layers, bottom first, to extract from its source.
type resolved struct {
	// src is where the image comes from: for a reference by digest,
	// the layout that holds it, not a configured name's.
	src        string
	layers     []v1.Layer
	workingDir string
}

// Store maps image names to local sources and extracts their layers
// into the worker's layer cache, as input layers are: built once, under
// the cache's budget, leased while an action uses them and evicted
// least recently used first when none does. A layer a previous run
// left is extracted again on its first use, verifying its diff ID:
// unlike an input layer, whose files are hardlinks to the verified file
// cache, an extracted layer has no cheaper check.
type Store struct {
	sources map[string]string
	cache   layers.LayerCache

	mu       sync.Mutex
	resolved map[string]*resolved
	// byDigest maps the manifest digests of the configured OCI
	// layouts to their source, listed at the first reference by a
	// digest not configured as such; archives counts the sources that
	// are not layouts.
	byDigest map[string]string
	archives int
	builds   atomic.Int64
}

// NewStore creates a Store whose layers live in cache; sources maps
// "docker://NAME[:TAG|@DIGEST]" to an OCI layout directory or a
// docker save archive.
func NewStore(cache layers.LayerCache, sources map[string]string) (*Store, error) {
	registerMetrics()
	s := &Store{sources: map[string]string{}, cache: cache, resolved: map[string]*resolved{}}
	for ref, src := range sources {
		key, err := Normalize(ref)
		if err != nil {
			return nil, err
		}
		s.sources[key] = src
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

// Get leases the layers of image ref, extracting those the layer cache
// does not hold. The caller releases the Image. Reading the image's
// manifest happens once; a second call costs a cache look-up per layer.
func (s *Store) Get(ctx context.Context, ref string) (*Image, error) {
	key, err := Normalize(ref)
	if err != nil {
		return nil, err
	}
	r, err := s.resolve(ref, key)
	if err != nil {
		return nil, err
	}
	img := &Image{WorkingDir: r.workingDir}
	// Image layers are listed bottom first; lowerdirs topmost first.
	for i := len(r.layers) - 1; i >= 0; i-- {
		lease, err := s.layer(ctx, r.layers[i])
		if err != nil {
			img.Release()
			return nil, util.StatusWrapf(err, "Container image %q from %q", ref, r.src)
		}
		img.Layers = append(img.Layers, lease)
	}
	imagePlacements.Inc()
	return img, nil
}

// resolve reads the manifest and configuration of image ref, once.
func (s *Store) resolve(ref, key string) (*resolved, error) {
	s.mu.Lock()
	r := s.resolved[key]
	s.mu.Unlock()
	if r != nil {
		return r, nil
	}
	src, err := s.sourceFor(ref, key)
	if err != nil {
		return nil, err
	}
	image, err := load(src, key)
	if err != nil {
		return nil, err
	}
	imageLayers, err := image.Layers()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "Container image %q from %q: %v", ref, src, err)
	}
	r = &resolved{src: src, layers: imageLayers}
	if cfg, err := image.ConfigFile(); err == nil && cfg != nil {
		r.workingDir = cfg.Config.WorkingDir
	}
	s.mu.Lock()
	s.resolved[key] = r
	s.mu.Unlock()
	return r, nil
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

// layer leases the extracted layer, keyed in the layer cache by its
// diff ID (the digest of its uncompressed tarball, which the image's
// configuration lists and which is verified while extracting). The key
// is a SHA-256 digest of size 0: input layers are keyed by Directory
// digests, which a diff ID never equals.
func (s *Store) layer(ctx context.Context, l v1.Layer) (layers.LayerLease, error) {
	diffID, err := l.DiffID()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "Layer has no diff ID: %v", err)
	}
	if diffID.Algorithm != "sha256" {
		return nil, status.Errorf(codes.FailedPrecondition, "Layer %s: only sha256 diff IDs are supported", diffID)
	}
	key, err := layerKeyFunction.NewDigest(diffID.Hex, 0)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "Layer %s: %v", diffID, err)
	}
	// No check: a layer a previous run left is extracted again.
	return s.cache.GetOrBuildChecked(ctx, key, func(ctx context.Context, dir string) (layers.LayerStats, error) {
		return s.extract(l, diffID, dir)
	}, nil)
}

var layerKeyFunction = digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)

// extract writes layer l at dir, checking its diff ID, and counts what
// it costs against the cache's budget.
func (s *Store) extract(l v1.Layer, diffID v1.Hash, dir string) (layers.LayerStats, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return layers.LayerStats{}, status.Errorf(codes.Internal, "Failed to create a layer directory: %v", err)
	}
	// Mkdir honours the umask; an action running as another user
	// must see the layer's root (a "./" entry may still set it).
	if err := os.Chmod(dir, 0o755); err != nil {
		return layers.LayerStats{}, status.Errorf(codes.Internal, "Failed to create a layer directory: %v", err)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return layers.LayerStats{}, status.Errorf(codes.FailedPrecondition, "Layer %s: %v", diffID, err)
	}
	defer rc.Close()
	h := sha256.New()
	if err := Extract(io.TeeReader(rc, h), dir); err != nil {
		return layers.LayerStats{}, err
	}
	// The rest of the stream (tar padding) is part of the digest.
	if _, err := io.Copy(h, rc); err != nil {
		return layers.LayerStats{}, status.Errorf(codes.FailedPrecondition, "Layer %s: %v", diffID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != diffID.Hex {
		return layers.LayerStats{}, status.Errorf(codes.FailedPrecondition, "Layer %s has digest sha256:%s: the image is corrupt", diffID, got)
	}
	var stats layers.LayerStats
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		stats.Inodes++
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				stats.Bytes += info.Size()
			}
		}
		return nil
	})
	if err != nil {
		return layers.LayerStats{}, status.Errorf(codes.Internal, "Failed to measure layer %s: %v", diffID, err)
	}
	s.builds.Add(1)
	layersExtracted.Inc()
	return stats, nil
}
