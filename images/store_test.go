package images

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitzel/bitzel-worker/images/imagetest"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
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
			store, err := NewStore(filepath.Join(t.TempDir(), "images"), map[string]string{tc.ref: tc.src})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { fsutil.RemoveAll(store.dir) })
			// busybox and docker://index.docker.io/library/busybox:latest
			// are one name.
			if store.Check(tc.ref) != nil || (tc.ref == "docker://busybox" && store.Check("docker://index.docker.io/library/busybox:latest") != nil) {
				t.Fatalf("Check(%q) refuses a configured image", tc.ref)
			}
			got, err := store.Get(tc.ref)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Layers) != 2 || got.WorkingDir != "/src" || store.Builds() != 2 {
				t.Fatalf("got %+v, %d builds; want 2 layers, /src, 2 builds", got, store.Builds())
			}
			// Topmost first: the upper layer has the whiteout.
			if b, err := os.ReadFile(filepath.Join(got.Layers[0], "etc/new")); err != nil || string(b) != "new" {
				t.Fatalf("upper layer: %q %v", b, err)
			}
			if b, err := os.ReadFile(filepath.Join(got.Layers[1], "etc/gone")); err != nil || string(b) != "gone" {
				t.Fatalf("lower layer: %q %v", b, err)
			}
			if _, err := store.Get(tc.ref); err != nil || store.Builds() != 2 {
				t.Fatalf("second Get: %v, %d builds; want none more", err, store.Builds())
			}
			// A second store over the same directory (a restart)
			// finds the layers built.
			again, err := NewStore(store.dir, map[string]string{tc.ref: tc.src})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := again.Get(tc.ref); err != nil || again.Builds() != 0 {
				t.Fatalf("after a restart: %v, %d builds; want 0", err, again.Builds())
			}
		})
	}
}

func TestStoreMissingImage(t *testing.T) {
	store, err := NewStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Get("docker://ubuntu:22.04")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--container-image") || !strings.Contains(err.Error(), "ubuntu:22.04") {
		t.Fatalf("got %v; want FAILED_PRECONDITION naming the image and the flag", err)
	}
	if _, err := store.Get("ubuntu"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no docker:// prefix: %v, want INVALID_ARGUMENT", err)
	}
}

func TestStoreCrashLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp", "layer-123", "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStore(dir, nil); err != nil {
		t.Fatal(err)
	}
	if names, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(names) != 0 {
		t.Fatalf("unfinished layers left: %v", names)
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
	store, err := NewStore(dir, map[string]string{"docker://bad:1": src})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get("docker://bad:1"); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `".."`) {
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
	store, err := NewStore(t.TempDir(), map[string]string{"docker://example.org/tools:1": layoutDir, "docker://example.org/saved:1": archive})
	if err != nil {
		t.Fatal(err)
	}
	byDigest := "docker://gcr.io/somewhere/else@" + manifestDigest.String()
	if err := store.Check(byDigest); err != nil {
		t.Fatalf("Check(%q): %v", byDigest, err)
	}
	got, err := store.Get(byDigest)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Layers) != 2 || got.WorkingDir != "/src" {
		t.Fatalf("got %+v, want the layout's image", got)
	}
	unknown := "docker://example.org/tools@sha256:" + strings.Repeat("0", 64)
	for _, err := range []error{store.Check(unknown), func() error { _, err := store.Get(unknown); return err }()} {
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), strings.Repeat("0", 64)) || !strings.Contains(err.Error(), "OCI layout") {
			t.Errorf("unknown digest: %v, want FAILED_PRECONDITION naming the digest and OCI layouts", err)
		}
	}

	// Configured by digest: the layout's manifest of that digest.
	exact, err := NewStore(t.TempDir(), map[string]string{byDigest: layoutDir})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := exact.Get(byDigest); err != nil || len(got.Layers) != 2 {
		t.Fatalf("configured by digest: %+v, %v", got, err)
	}
	// An archive cannot vouch for a digest.
	saved, err := NewStore(t.TempDir(), map[string]string{byDigest: archive})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := saved.Get(byDigest); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "docker save archive") {
		t.Fatalf("archive configured by digest: %v, want FAILED_PRECONDITION saying an archive records no digests", err)
	}
}
