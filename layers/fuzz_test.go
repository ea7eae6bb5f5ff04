package cas

import (
	"fmt"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/protobuf/proto"
)

// Fuzz targets for what a client controls completely: the bitzel.layers
// value and Directory messages. Run one with, e.g.,
//
//	go test -run XXX -fuzz FuzzParseLayersProperty -fuzztime 30s ./cas
//
// The committed corpora (testdata/fuzz) also run as plain tests.

func FuzzParseLayersProperty(f *testing.F) {
	h := strings.Repeat("a", 64)
	for _, seed := range []string{
		"", h + "/1", h + "/1 " + strings.Repeat("b", 64) + "/22", h + "/1 " + h + "/1",
		h, "/1", h + "/-1", h + "/1/2", h + "/99999999999999999999", "\t" + h + "/0\n", strings.Repeat("A", 64) + "/1",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		layers, msg := parseLayersProperty(sha256Function, value)
		if msg != "" {
			if layers != nil {
				t.Fatalf("error %q with layers %v", msg, layers)
			}
			if !strings.Contains(msg, LayersPropertyName) {
				t.Fatalf("error %q does not name the property", msg)
			}
			return
		}
		if len(layers) != len(strings.Fields(value)) {
			t.Fatalf("%d layers from %d fields", len(layers), len(strings.Fields(value)))
		}
		// What was accepted prints back to something that parses to
		// the same list, without duplicates.
		var printed []string
		seen := map[digest.Digest]bool{}
		for _, l := range layers {
			if seen[l] {
				t.Fatalf("duplicate %v accepted", l)
			}
			seen[l] = true
			if l.GetSizeBytes() < 0 {
				t.Fatalf("negative size accepted: %v", l)
			}
			printed = append(printed, fmt.Sprintf("%s/%d", l.GetHashString(), l.GetSizeBytes()))
		}
		again, msg := parseLayersProperty(sha256Function, strings.Join(printed, " "))
		if msg != "" || len(again) != len(layers) {
			t.Fatalf("round trip of %q: %v, %q", value, again, msg)
		}
		for i := range again {
			if again[i] != layers[i] {
				t.Fatalf("round trip changed layer %d: %v != %v", i, again[i], layers[i])
			}
		}
	})
}

func FuzzDirectoryValidation(f *testing.F) {
	h := strings.Repeat("c", 64)
	d := &remoteexecution.Digest{Hash: h, SizeBytes: 3}
	for _, seed := range []*remoteexecution.Directory{
		{},
		{Files: []*remoteexecution.FileNode{{Name: "a", Digest: d}, {Name: "b", Digest: d, IsExecutable: true}}},
		{Files: []*remoteexecution.FileNode{{Name: "b", Digest: d}, {Name: "a", Digest: d}}},
		{Files: []*remoteexecution.FileNode{{Name: "..", Digest: d}}},
		{Files: []*remoteexecution.FileNode{{Name: "a/b", Digest: d}}},
		{Directories: []*remoteexecution.DirectoryNode{{Name: "x", Digest: d}}, Files: []*remoteexecution.FileNode{{Name: "x", Digest: d}}},
		{Symlinks: []*remoteexecution.SymlinkNode{{Name: "l", Target: "../../x"}, {Name: "m", Target: "/etc/passwd"}}},
		{NodeProperties: &remoteexecution.NodeProperties{Properties: []*remoteexecution.NodeProperty{{Name: LayersPropertyName, Value: h + "/3"}}}},
	} {
		data, err := proto.Marshal(seed)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := &remoteexecution.Directory{}
		if proto.Unmarshal(data, dir) != nil {
			return
		}
		di := newDirInfo(digestOf(data), dir, len(data))
		if di.localErr != nil {
			if di.localErr.path == "" && len(dir.Files)+len(dir.Directories)+len(dir.Symlinks) > 0 && di.localErr.msg == "" {
				t.Fatalf("error without a path or message: %+v", di.localErr)
			}
			return
		}
		// Accepted: every property the materializer relies on holds.
		kinds := map[string]bool{}
		check := func(name string) {
			if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
				t.Fatalf("bad name %q accepted", name)
			}
			if kinds[name] {
				t.Fatalf("name %q accepted twice", name)
			}
			kinds[name] = true
		}
		for i, file := range dir.Files {
			check(file.Name)
			if i > 0 && dir.Files[i-1].Name >= file.Name {
				t.Fatalf("unsorted files accepted")
			}
		}
		for i, child := range dir.Directories {
			check(child.Name)
			if i > 0 && dir.Directories[i-1].Name >= child.Name {
				t.Fatalf("unsorted directories accepted")
			}
		}
		for i, link := range dir.Symlinks {
			check(link.Name)
			if i > 0 && dir.Symlinks[i-1].Name >= link.Name {
				t.Fatalf("unsorted symlinks accepted")
			}
			if link.Target == "" || strings.ContainsRune(link.Target, 0) {
				t.Fatalf("symlink target %q accepted", link.Target)
			}
			// Absolute targets are the worker's choice: they must be
			// recorded, so the planner can refuse them.
			if strings.HasPrefix(link.Target, "/") && di.absolutePath == "" {
				t.Fatalf("absolute symlink %q not recorded", link.Name)
			}
			// A relative target's climb must be recorded, so the
			// planner can refuse one that leaves the input root.
			// (An absolute one is judged by the policy above: "/.."
			// is "/" again.)
			if climb := symlinkClimb(link.Target); !strings.HasPrefix(link.Target, "/") && climb > di.climb {
				t.Fatalf("symlink %q climbs %d, recorded %d", link.Name, climb, di.climb)
			}
		}
	})
}
