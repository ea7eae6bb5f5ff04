package layers

import (
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layerproperty"
	"google.golang.org/protobuf/proto"
)

// Fuzz target for what a client controls completely: Directory
// messages (the bitzel.layers value is fuzzed in package
// layerproperty). Run it with, e.g.,
//
//	go test -run XXX -fuzz FuzzDirectoryValidation -fuzztime 30s ./layers
//
// The committed corpora (testdata/fuzz) also run as plain tests.

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
		{NodeProperties: &remoteexecution.NodeProperties{Properties: []*remoteexecution.NodeProperty{{Name: layerproperty.Name, Value: h + "/3"}}}},
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
