package images

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitzel/bitzel-worker/images/imagetest"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// testImage has a lower layer with two files and an upper one that
// deletes one of them and adds another.
func testImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image,
		imagetest.Layer(t, entry{Name: "etc/", Type: tar.TypeDir}, entry{Name: "etc/keep", Type: tar.TypeReg, Body: "keep"}, entry{Name: "etc/gone", Type: tar.TypeReg, Body: "gone"}),
		imagetest.Layer(t, entry{Name: "etc/.wh.gone", Type: tar.TypeReg}, entry{Name: "etc/new", Type: tar.TypeReg, Body: "new"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.Config.WorkingDir = "/src"
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestStoreSources(t *testing.T) {
	img := testImage(t)
	dir := t.TempDir()
	layoutDir, archive := imagetest.WriteSources(t, dir, "example.org/tools:1", img)
	for _, tc := range []struct{ name, ref, src string }{
		{"OCI layout", "docker://busybox", layoutDir},
		{"docker save", "docker://example.org/tools:1", archive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cacheDir := t.TempDir()
			cache, err := layers.NewLayerCache(cacheDir, 1<<30, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			store, err := NewStore(cache, map[string]string{tc.ref: tc.src})
			if err != nil {
				t.Fatal(err)
			}
			// busybox and docker://index.docker.io/library/busybox:latest
			// are one name.
			if store.Check(tc.ref) != nil || (tc.ref == "docker://busybox" && store.Check("docker://index.docker.io/library/busybox:latest") != nil) {
				t.Fatalf("Check(%q) refuses a configured image", tc.ref)
			}
			got, err := store.Get(context.Background(), tc.ref)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Layers) != 2 || got.WorkingDir != "/src" || store.Builds() != 2 {
				t.Fatalf("got %+v, %d builds; want 2 layers, /src, 2 builds", got, store.Builds())
			}
			// Topmost first: the upper layer has the whiteout.
			if b, err := os.ReadFile(filepath.Join(got.Layers[0].Path(), "etc/new")); err != nil || string(b) != "new" {
				t.Fatalf("upper layer: %q %v", b, err)
			}
			lower := filepath.Join(got.Layers[1].Path(), "etc/gone")
			if b, err := os.ReadFile(lower); err != nil || string(b) != "gone" {
				t.Fatalf("lower layer: %q %v", b, err)
			}
			got.Release()
			again, err := store.Get(context.Background(), tc.ref)
			if err != nil || store.Builds() != 2 {
				t.Fatalf("second Get: %v, %d builds; want none more", err, store.Builds())
			}
			again.Release()

			// A restart: the layers left on disk are not served
			// unverified. One changed while the worker was down is
			// extracted again, with the image's bytes.
			if err := cache.Close(); err != nil {
				t.Fatal(err)
			}
			os.Chmod(filepath.Dir(lower), 0o755)
			if err := os.WriteFile(lower, []byte("tampered"), 0o644); err != nil {
				t.Fatal(err)
			}
			cache, err = layers.NewLayerCache(cacheDir, 1<<30, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer cache.Close()
			restarted, err := NewStore(cache, map[string]string{tc.ref: tc.src})
			if err != nil {
				t.Fatal(err)
			}
			got, err = restarted.Get(context.Background(), tc.ref)
			if err != nil || restarted.Builds() != 2 {
				t.Fatalf("after a restart: %v, %d builds; want both layers extracted again", err, restarted.Builds())
			}
			defer got.Release()
			if b, err := os.ReadFile(filepath.Join(got.Layers[1].Path(), "etc/gone")); err != nil || string(b) != "gone" {
				t.Fatalf("after a restart the lower layer holds %q (%v), want the image's bytes", b, err)
			}
		})
	}
}

// Image layers live under the layer cache's budget: leased while an
// action uses them (never evicted then), evicted least recently used
// first once released when other layers need the room, and extracted
// again when asked for after that.
func TestImageLayersAreLeasedAndEvictedLikeInputLayers(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	imageOf := func(body string) v1.Image {
		img, err := mutate.AppendLayers(empty.Image, imagetest.Layer(t, entry{Name: "data", Type: tar.TypeReg, Body: body}))
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	firstLayout, _ := imagetest.WriteSources(t, t.TempDir(), "example.org/first:1", imageOf(big+"1"))
	secondLayout, _ := imagetest.WriteSources(t, t.TempDir(), "example.org/second:1", imageOf(big+"2"))
	// Room for one of the two layers.
	cache, err := layers.NewLayerCache(t.TempDir(), 3<<19, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	store, err := NewStore(cache, map[string]string{"docker://example.org/first:1": firstLayout, "docker://example.org/second:1": secondLayout})
	if err != nil {
		t.Fatal(err)
	}
	first, err := store.Get(context.Background(), "docker://example.org/first:1")
	if err != nil {
		t.Fatal(err)
	}
	second, err := store.Get(context.Background(), "docker://example.org/second:1")
	if err != nil {
		t.Fatal(err)
	}
	// Over budget, but both leased: both stay.
	for _, img := range []*Image{first, second} {
		if _, err := os.Stat(filepath.Join(img.Layers[0].Path(), "data")); err != nil {
			t.Fatalf("a leased image layer was evicted: %v", err)
		}
	}
	first.Release()
	second.Release()
	// The first, least recently used, makes room for a third use of
	// the second, and is extracted again when asked for.
	second, err = store.Get(context.Background(), "docker://example.org/second:1")
	if err != nil {
		t.Fatal(err)
	}
	second.Release()
	builds := store.Builds()
	first, err = store.Get(context.Background(), "docker://example.org/first:1")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	if store.Builds() != builds+1 {
		t.Errorf("the released first image's layer was not evicted: %d builds after %d", store.Builds(), builds)
	}
	if b, err := os.ReadFile(filepath.Join(first.Layers[0].Path(), "data")); err != nil || string(b) != big+"1" {
		t.Errorf("the first image's layer extracted again holds %d bytes (%v)", len(b), err)
	}
}

func TestStoreMissingImage(t *testing.T) {
	store, err := NewStore(imagetest.LayerCache(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Get(context.Background(), "docker://ubuntu:22.04")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--container-image") || !strings.Contains(err.Error(), "ubuntu:22.04") {
		t.Fatalf("got %v; want FAILED_PRECONDITION naming the image and the flag", err)
	}
	if _, err := store.Get(context.Background(), "ubuntu"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no docker:// prefix: %v, want INVALID_ARGUMENT", err)
	}
}

func TestStoreRefusesHostileLayer(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image, imagetest.Layer(t, entry{Name: "../escape", Type: tar.TypeReg, Body: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "bad.tar")
	tag, _ := name.NewTag("bad:1")
	if err := tarball.WriteToFile(src, tag, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cache, err := layers.NewLayerCache(dir, 1<<30, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	store, err := NewStore(cache, map[string]string{"docker://bad:1": src})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(context.Background(), "docker://bad:1"); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `".."`) {
		t.Fatalf("got %v", err)
	}
	for _, d := range []string{"tmp", "layers"} {
		if names, _ := os.ReadDir(filepath.Join(dir, d)); len(names) != 0 {
			t.Fatalf("%s holds %v after a refused layer", d, names)
		}
	}
}

// A reference by digest is served from any configured OCI layout that
// holds a manifest of that digest, under whatever name the operator
// configured it; a digest no layout holds, or one that only an archive
// (which records no manifest digests) could hold, is refused naming the
// digest and the way out.
func TestStoreServesDigestReferencesFromLayoutsThatHoldThem(t *testing.T) {
	img := testImage(t)
	manifestDigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	layoutDir, archive := imagetest.WriteSources(t, t.TempDir(), "example.org/tools:1", img)
	store, err := NewStore(imagetest.LayerCache(t), map[string]string{"docker://example.org/tools:1": layoutDir, "docker://example.org/saved:1": archive})
	if err != nil {
		t.Fatal(err)
	}
	byDigest := "docker://gcr.io/somewhere/else@" + manifestDigest.String()
	if err := store.Check(byDigest); err != nil {
		t.Fatalf("Check(%q): %v", byDigest, err)
	}
	got, err := store.Get(context.Background(), byDigest)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Layers) != 2 || got.WorkingDir != "/src" {
		t.Fatalf("got %+v, want the layout's image", got)
	}
	unknown := "docker://example.org/tools@sha256:" + strings.Repeat("0", 64)
	for _, err := range []error{store.Check(unknown), func() error { _, err := store.Get(context.Background(), unknown); return err }()} {
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), strings.Repeat("0", 64)) || !strings.Contains(err.Error(), "OCI layout") {
			t.Errorf("unknown digest: %v, want FAILED_PRECONDITION naming the digest and OCI layouts", err)
		}
	}

	// Configured by digest: the layout's manifest of that digest.
	exact, err := NewStore(imagetest.LayerCache(t), map[string]string{byDigest: layoutDir})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := exact.Get(context.Background(), byDigest); err != nil || len(got.Layers) != 2 {
		t.Fatalf("configured by digest: %+v, %v", got, err)
	}
	// An archive cannot vouch for a digest.
	saved, err := NewStore(imagetest.LayerCache(t), map[string]string{byDigest: archive})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := saved.Get(context.Background(), byDigest); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "docker save archive") {
		t.Fatalf("archive configured by digest: %v, want FAILED_PRECONDITION saying an archive records no digests", err)
	}
}

// An image served by digest from a layout whose layer is gone is
// refused naming that layout, the source it was really read from.
func TestDigestReferenceErrorsNameTheLayoutServingIt(t *testing.T) {
	img := testImage(t)
	manifestDigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	layoutDir, _ := imagetest.WriteSources(t, t.TempDir(), "example.org/tools:1", img)
	imageLayers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := imageLayers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(layoutDir, "blobs", blob.Algorithm, blob.Hex)); err != nil {
		t.Fatal(err)
	}
	store, err := NewStore(imagetest.LayerCache(t), map[string]string{"docker://example.org/tools:1": layoutDir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Get(context.Background(), "docker://elsewhere.example/x@"+manifestDigest.String())
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("from %q", layoutDir)) {
		t.Fatalf("got %v, want an error naming %s", err, layoutDir)
	}
}
