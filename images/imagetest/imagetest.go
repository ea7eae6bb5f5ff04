// Package imagetest builds container images for tests, of this module's
// images package and end to end: layers from tar entries, and an image
// written both as an OCI image layout and as a `docker save` archive.
package imagetest

import (
	"archive/tar"
	"bytes"
	"io"
	"path/filepath"
	"testing"

	"github.com/bitzel/bitzel-worker/layers"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Entry is one entry of a layer's tarball. Mode 0 means 0644; only a
// regular file (tar.TypeReg) carries Body.
type Entry struct {
	Name, Link, Body string
	Type             byte
	Mode             int64
}

// Tar is the tarball of entries, in order.
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, e := range entries {
		mode := e.Mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.Name, Linkname: e.Link, Typeflag: e.Type, Mode: mode}
		if e.Type == tar.TypeReg {
			hdr.Size = int64(len(e.Body))
		}
		if err := w.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.Type == tar.TypeReg {
			w.Write([]byte(e.Body))
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Layer is the uncompressed image layer of entries.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	data := Tar(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// WriteSources writes img into dir twice, as an OCI image layout
// (dir/layout) and as a `docker save` archive tagged tag
// (dir/saved.tar), the two forms an operator can provide.
func WriteSources(t testing.TB, dir, tag string, img v1.Image) (layoutDir, archive string) {
	t.Helper()
	layoutDir = filepath.Join(dir, "layout")
	p, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	archive = filepath.Join(dir, "saved.tar")
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(archive, ref, img); err != nil {
		t.Fatal(err)
	}
	return layoutDir, archive
}

// LayerCache is a layer cache in a temporary directory, for a Store
// to extract into.
func LayerCache(t testing.TB) layers.LayerCache {
	t.Helper()
	cache, err := layers.NewLayerCache(t.TempDir(), 1<<30, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	return cache
}
