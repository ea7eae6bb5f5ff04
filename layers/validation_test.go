package layers

import (
	"os"
	"path/filepath"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
)

func TestInvalidTreesRejectedWithPath(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{Planner: PlannerOptions{MaxDepth: 4}})
	fd := e.putBlob([]byte("x")).GetProto()
	fileNode := func(name string) *remoteexecution.FileNode {
		return &remoteexecution.FileNode{Name: name, Digest: fd}
	}
	empty := e.putDirectory(&remoteexecution.Directory{}).GetProto()
	dirNode := func(name string) *remoteexecution.DirectoryNode {
		return &remoteexecution.DirectoryNode{Name: name, Digest: empty}
	}
	// nest puts d at foo/ of a new root.
	nest := func(d *remoteexecution.Directory) *remoteexecution.Directory {
		return &remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{{Name: "foo", Digest: e.putDirectory(d).GetProto()}}}
	}
	for _, tc := range []struct {
		name string
		root *remoteexecution.Directory
		want []string
	}{
		{"dotdot dir", nest(&remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{dirNode("..")}}), []string{`"foo/.."`}},
		{"dot file", &remoteexecution.Directory{Files: []*remoteexecution.FileNode{fileNode(".")}}, []string{`"."`}},
		{"slash", nest(&remoteexecution.Directory{Files: []*remoteexecution.FileNode{fileNode("a/b")}}), []string{`"foo/a/b"`, "contains"}},
		{"empty name", &remoteexecution.Directory{Files: []*remoteexecution.FileNode{fileNode("")}}, []string{"empty name"}},
		{"unsorted", nest(&remoteexecution.Directory{Files: []*remoteexecution.FileNode{fileNode("b"), fileNode("a")}}), []string{`"foo/a"`, "not sorted"}},
		{"duplicate", &remoteexecution.Directory{Files: []*remoteexecution.FileNode{fileNode("a"), fileNode("a")}}, []string{`"a"`, "duplicate"}},
		{"file and dir", nest(&remoteexecution.Directory{Files: []*remoteexecution.FileNode{fileNode("a")}, Directories: []*remoteexecution.DirectoryNode{dirNode("a")}}), []string{`"foo/a"`, "both"}},
		{"file and symlink", &remoteexecution.Directory{Files: []*remoteexecution.FileNode{fileNode("a")}, Symlinks: []*remoteexecution.SymlinkNode{{Name: "a", Target: "x"}}}, []string{`"a"`, "both"}},
		{"escaping symlink at root", &remoteexecution.Directory{Symlinks: []*remoteexecution.SymlinkNode{{Name: "s", Target: "../etc/passwd"}}}, []string{`"s"`, "escapes"}},
		{"escaping symlink below", nest(&remoteexecution.Directory{Symlinks: []*remoteexecution.SymlinkNode{{Name: "s", Target: "x/../../../y"}}}), []string{`"foo/s"`, "escapes"}},
		{"absolute symlink", nest(&remoteexecution.Directory{Symlinks: []*remoteexecution.SymlinkNode{{Name: "s", Target: "/etc"}}}), []string{`"foo/s"`, "absolute"}},
		{"empty symlink", &remoteexecution.Directory{Symlinks: []*remoteexecution.SymlinkNode{{Name: "s"}}}, []string{`"s"`, "empty target"}},
		{"bad file digest", &remoteexecution.Directory{Files: []*remoteexecution.FileNode{{Name: "f", Digest: &remoteexecution.Digest{Hash: "zz", SizeBytes: 1}}}}, []string{`"f"`, "digest"}},
		{"too deep", nest(nest(nest(nest(&remoteexecution.Directory{})))), []string{"depth 5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.materialize(e.putDirectory(tc.root))
			requireCode(t, err, codes.InvalidArgument, append([]string{"input root: "}, tc.want...)...)
		})
	}
}

func TestSymlinksInsideRootAccepted(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	e.mustMaterialize(e.putTree(dir{
		"a": dir{"b": dir{"up2": symlink("../../x"), "dangling": symlink("nowhere")}, "up": symlink("..")},
		"x": file("x"),
	}))
}

func TestEntryLimit(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{Planner: PlannerOptions{MaxEntries: 3}})
	_, err := e.materialize(e.putTree(dir{"a": file("a"), "b": dir{"c": file("c"), "d": file("d")}}))
	requireCode(t, err, codes.InvalidArgument, "entries exceed")
}

func TestDeepChainRejectedWhileFetching(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{Planner: PlannerOptions{MaxDepth: 8}})
	d := e.putDirectory(&remoteexecution.Directory{})
	for i := 0; i < 40; i++ {
		d = e.putDirectory(&remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{{Name: "d", Digest: d.GetProto()}}})
	}
	before := e.cas.Puts.Load()
	_, err := e.materialize(d)
	requireCode(t, err, codes.InvalidArgument, "depth")
	if e.cas.Puts.Load() != before {
		t.Fatal("storage written")
	}
}

func TestExponentialTreeRejected(t *testing.T) {
	// 60 levels, each holding its child twice: 2^60 entries in a DAG
	// of 60 messages. It must fail the entry limit, not wrap around
	// or try to materialise.
	e := newTestEnv(t, MaterializerOptions{})
	d := e.putDirectory(&remoteexecution.Directory{Files: []*remoteexecution.FileNode{{Name: "f", Digest: e.putBlob([]byte("f")).GetProto()}}})
	for i := 0; i < 70; i++ {
		d = e.putDirectory(&remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{{Name: "a", Digest: d.GetProto()}, {Name: "b", Digest: d.GetProto()}}})
	}
	_, err := e.materialize(d)
	requireCode(t, err, codes.InvalidArgument, "entries exceed")
}

func TestAbsoluteSymlinksWhenAllowed(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{Planner: PlannerOptions{AllowAbsoluteSymlinks: true}})
	root := e.putDirectory(&remoteexecution.Directory{Symlinks: []*remoteexecution.SymlinkNode{{Name: "s", Target: "/etc"}}})
	r := e.mustMaterialize(root)
	defer r.Release()
	if target, err := os.Readlink(filepath.Join(r.Mounts[0].Layers[0], "s")); err != nil || target != "/etc" {
		t.Errorf("symlink in the layer: %q, %v", target, err)
	}
	// Climbing out with a relative target is refused all the same.
	escaping := e.putDirectory(&remoteexecution.Directory{Symlinks: []*remoteexecution.SymlinkNode{{Name: "up", Target: "../x"}}})
	_, err := e.materialize(escaping)
	requireCode(t, err, codes.InvalidArgument, `"up"`, "escapes")
}
