package client

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layerproperty"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

var sha256Function = digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if strings.HasPrefix(content, "->") {
			os.Symlink(strings.TrimPrefix(content, "->"), full)
			continue
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		os.WriteFile(full, []byte(content), mode)
	}
	return dir
}

func TestTreeBuilderIsSortedAndDeterministic(t *testing.T) {
	dir := writeTree(t, map[string]string{"b": "2", "a": "1", "z/x": "#!/bin/sh\n", "link": "->a"})
	first, err := NewTreeBuilder(sha256Function).AddDirectory(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := NewTreeBuilder(sha256Function)
	second, err := b.AddDirectory(dir)
	if err != nil || first != second {
		t.Fatalf("two builds of one tree: %v, %v (%v)", first, second, err)
	}
	root, _ := b.Directory(second)
	if len(root.Files) != 2 || root.Files[0].Name != "a" || root.Files[1].Name != "b" {
		t.Errorf("files %v", root.Files)
	}
	if len(root.Symlinks) != 1 || root.Symlinks[0].Target != "a" {
		t.Errorf("symlinks %v", root.Symlinks)
	}
	z, _ := b.Directory(mustDigest(t, root.Directories[0].Digest))
	if !z.Files[0].IsExecutable {
		t.Error("the executable bit was lost")
	}
	if _, files := b.Blobs(); len(files) != 3 {
		t.Errorf("%d file blobs, want 3", len(files))
	}
}

func mustDigest(t *testing.T, d *remoteexecution.Digest) digest.Digest {
	t.Helper()
	parsed, err := sha256Function.NewDigestFromProto(d)
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}

func TestWithLayersDeclaresTheUnionAndKeepsTheRest(t *testing.T) {
	b := NewTreeBuilder(sha256Function)
	b.PreserveModes = true
	work, _ := b.AddDirectory(writeTree(t, map[string]string{"recipe-sysroot/own.h": "x", "src/main.c": "y"}))
	dep1, _ := b.AddDirectory(writeTree(t, map[string]string{"usr/include/a.h": "a"}))
	dep2, _ := b.AddDirectory(writeTree(t, map[string]string{"usr/include/b.h": "b"}))
	root, err := b.WithLayers(work, "recipe-sysroot", []digest.Digest{dep1, dep2})
	if err != nil {
		t.Fatal(err)
	}
	top, _ := b.Directory(root)
	if len(top.Directories) != 2 || top.Directories[0].Name != "recipe-sysroot" || top.Directories[1].Name != "src" {
		t.Fatalf("root %v", top.Directories)
	}
	sysroot, _ := b.Directory(mustDigest(t, top.Directories[0].Digest))
	properties := sysroot.GetNodeProperties()
	if len(properties.GetProperties()) != 1 || properties.Properties[0].Name != layerproperty.Name {
		t.Fatalf("properties %v", properties)
	}
	want := dep1.GetHashString() + "/" + itoa(dep1.GetSizeBytes()) + " " + dep2.GetHashString() + "/" + itoa(dep2.GetSizeBytes())
	if properties.Properties[0].Value != want {
		t.Errorf("bitzel.layers = %q, want %q", properties.Properties[0].Value, want)
	}
	if properties.GetUnixMode() == nil || len(sysroot.Files) != 1 {
		t.Errorf("the union lost its own mode or entries: %v", sysroot)
	}
	// A path that does not exist yet is created; one through a file
	// is refused.
	if _, err := b.WithLayers(work, "new/dir", []digest.Digest{dep1}); err != nil {
		t.Errorf("new path: %v", err)
	}
	if _, err := b.WithLayers(work, "src/main.c/x", []digest.Digest{dep1}); err == nil {
		t.Error("a layer below a file was accepted")
	}
	if _, err := b.Place(work, "../up", dep1); err == nil {
		t.Error("a path leaving the root was accepted")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
