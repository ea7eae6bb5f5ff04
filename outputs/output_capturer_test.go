package outputs

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

// outputFixture materialises an input root where "out" is a mount of
// its own (to exercise grafting), and plays an action's writes into
// the upperdirs.
type outputFixture struct {
	e      *testEnv
	r      *layers.InputRoot
	uppers []string
	oc     OutputCapturer
}

func newOutputFixture(t *testing.T) *outputFixture {
	e := newTestEnv(t, layers.MaterializerOptions{Planner: layers.PlannerOptions{SplitThreshold: 3}})
	root := e.putTree(dir{
		"src":  dir{"a.c": file("A"), "b.c": file("B")},
		"out":  dir{"keep.txt": file("keep"), "old.txt": file("old"), "sub": dir{"deep.txt": file("deep")}, "tool": exe("#!tool")},
		"keep": file("top keep"),
	})
	r := e.mustMaterialize(root)
	if got := mountPaths(r); !reflect.DeepEqual(got, []string{"", "out"}) {
		t.Fatalf("mounts %q", got)
	}
	f := &outputFixture{e: e, r: r, oc: NewOutputCapturer(e.storage, OutputCapturerOptions{})}
	for i := range r.Mounts {
		u := filepath.Join(e.dir, "upper", string(rune('0'+i)))
		if err := os.MkdirAll(u, 0o755); err != nil {
			t.Fatal(err)
		}
		f.uppers = append(f.uppers, u)
	}
	return f
}

func (f *outputFixture) write(t *testing.T, mount int, rel, content string, mode uint32) {
	t.Helper()
	p := filepath.Join(f.uppers[mount], rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	// unix.Chmod: os.Chmod does not take raw setuid bits.
	if err := unix.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// act plays what an action would leave in the upperdirs.
func (f *outputFixture) act(t *testing.T) {
	out := f.uppers[1]
	f.write(t, 0, "result.txt", "result", 0o644)
	f.write(t, 1, "new.bin", "binary", 0o755)
	f.write(t, 1, "setuid", "suid", 0o4755)
	f.write(t, 1, "n1/n2/f.txt", "nested", 0o640)
	f.write(t, 1, "sub/fresh.txt", "fresh", 0o644)
	must(t, os.Symlink("new.bin", filepath.Join(out, "ln")))
	must(t, os.Symlink("/etc/passwd", filepath.Join(out, "abs")))
	must(t, os.Mkdir(filepath.Join(out, "emptydir"), 0o700))
	must(t, os.Chmod(filepath.Join(out, "emptydir"), 0o700))
	// rm out/old.txt: a whiteout (unprivileged users may create
	// them since Linux 5.8).
	must(t, unix.Mknod(filepath.Join(out, "old.txt"), unix.S_IFCHR, 0))
	// rm -r out/sub; mkdir out/sub: an opaque directory.
	must(t, unix.Setxattr(filepath.Join(out, "sub"), "user.overlay.opaque", []byte("y"), 0))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *outputFixture) tree(t *testing.T, d *remoteexecution.Digest) *remoteexecution.Tree {
	t.Helper()
	td, err := sha256Function.NewDigestFromProto(d)
	must(t, err)
	m, err := f.e.storage.ContentAddressableStorage.Get(context.Background(), td).ToProto(&remoteexecution.Tree{}, 1<<20)
	must(t, err)
	return m.(*remoteexecution.Tree)
}

// describe renders a Tree as sorted "path kind detail" lines.
func describe(t *testing.T, tr *remoteexecution.Tree) []string {
	children := map[string]*remoteexecution.Directory{}
	for _, c := range tr.Children {
		children[digestOf(marshal(c)).GetHashString()] = c
	}
	var out []string
	var walk func(prefix string, d *remoteexecution.Directory)
	walk = func(prefix string, d *remoteexecution.Directory) {
		mode := ""
		if m := d.GetNodeProperties().GetUnixMode(); m != nil {
			mode = " " + modeString(m.Value)
		}
		out = append(out, prefix+"/ dir"+mode)
		for _, f := range d.Files {
			line := prefix + "/" + f.Name + " file " + f.Digest.Hash[:8]
			if f.IsExecutable {
				line += " x"
			}
			if m := f.GetNodeProperties().GetUnixMode(); m != nil {
				line += " " + modeString(m.Value)
			}
			out = append(out, line)
		}
		for _, s := range d.Symlinks {
			out = append(out, prefix+"/"+s.Name+" symlink "+s.Target)
		}
		for _, c := range d.Directories {
			child, ok := children[c.Digest.Hash]
			if !ok {
				t.Fatalf("tree lacks child %s", c.Name)
			}
			walk(prefix+"/"+c.Name, child)
		}
	}
	walk("", tr.Root)
	sort.Strings(out)
	return out
}

func modeString(m uint32) string {
	const digits = "01234567"
	return string([]byte{digits[m>>9&7], digits[m>>6&7], digits[m>>3&7], digits[m&7]})
}

func h8(content string) string { return digestOf([]byte(content)).GetHashString()[:8] }

// Long on purpose: one tree with every legacy output kind, checked field by field.
func TestCaptureLegacyOutputs(t *testing.T) {
	f := newOutputFixture(t)
	f.act(t)
	f.e.cas.Reset()
	command := &remoteexecution.Command{
		OutputFiles:          []string{"result.txt", "out/keep.txt", "missing.txt", "out/ln", "out/tool"},
		OutputDirectories:    []string{"out", "missing_dir"},
		OutputNodeProperties: []string{"unix_mode"},
	}
	res, err := f.oc.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, command)
	must(t, err)

	var files []string
	for _, of := range res.OutputFiles {
		line := of.Path + " " + of.Digest.Hash[:8]
		if of.IsExecutable {
			line += " x"
		}
		line += " " + modeString(of.NodeProperties.GetUnixMode().GetValue())
		files = append(files, line)
	}
	if want := []string{"out/keep.txt " + h8("keep") + " 0444", "out/tool " + h8("#!tool") + " x 0555", "result.txt " + h8("result") + " 0644"}; !reflect.DeepEqual(files, want) {
		t.Fatalf("output files %q, want %q", files, want)
	}
	if len(res.OutputFileSymlinks) != 1 || res.OutputFileSymlinks[0].Path != "out/ln" || res.OutputFileSymlinks[0].Target != "new.bin" {
		t.Fatalf("output file symlinks %v", res.OutputFileSymlinks)
	}
	if len(res.OutputSymlinks) != 1 {
		t.Fatalf("output symlinks %v", res.OutputSymlinks)
	}
	if len(res.OutputDirectories) != 1 || res.OutputDirectories[0].Path != "out" {
		t.Fatalf("output directories %v", res.OutputDirectories)
	}
	got := describe(t, f.tree(t, res.OutputDirectories[0].TreeDigest))
	want := []string{
		"/ dir",
		"/abs symlink /etc/passwd",
		"/emptydir/ dir",
		"/keep.txt file " + h8("keep") + " 0444",
		"/ln symlink new.bin",
		"/n1/ dir",
		"/n1/n2/ dir",
		"/n1/n2/f.txt file " + h8("nested") + " 0640",
		"/new.bin file " + h8("binary") + " x 0755",
		"/setuid file " + h8("suid") + " x 4755",
		"/sub/ dir",
		"/sub/fresh.txt file " + h8("fresh") + " 0644",
		"/tool file " + h8("#!tool") + " x 0555",
	}
	// Directory modes, as asked for.
	for i, w := range want {
		switch w {
		case "/ dir":
			want[i] = "/ dir " + dirMode(t, f.uppers[1])
		case "/emptydir/ dir":
			want[i] = "/emptydir/ dir 0700"
		case "/n1/ dir", "/n1/n2/ dir", "/sub/ dir":
			want[i] = w + " " + dirMode(t, filepath.Join(f.uppers[1], w[1:len(w)-5]))
		}
	}
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("tree\n%q\nwant\n%q", got, want)
	}

	// Only what the action wrote (and the Tree) was uploaded; inputs
	// it did not touch kept their digests and were not sent.
	puts := f.e.cas.Reset()
	for _, untouched := range []string{"keep", "#!tool", "deep", "old"} {
		if puts[digestOf([]byte(untouched))] > 0 {
			t.Fatalf("untouched input %q uploaded", untouched)
		}
	}
	for _, written := range []string{"result", "binary", "suid", "nested", "fresh"} {
		if puts[digestOf([]byte(written))] != 1 {
			t.Fatalf("output %q uploaded %d times", written, puts[digestOf([]byte(written))])
		}
	}
	if len(puts) != 6 {
		t.Fatalf("%d blobs uploaded, want 5 files and 1 tree", len(puts))
	}

	// Capturing again uploads nothing: FindMissing finds it all.
	_, err = f.oc.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, command)
	must(t, err)
	if puts := f.e.cas.Reset(); len(puts) != 0 {
		t.Fatalf("second capture uploaded %d blobs", len(puts))
	}
}

func dirMode(t *testing.T, p string) string {
	var st unix.Stat_t
	must(t, unix.Stat(p, &st))
	return modeString(st.Mode & 0o7777)
}

func TestCaptureOutputPaths(t *testing.T) {
	f := newOutputFixture(t)
	f.act(t)
	res, err := f.oc.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, &remoteexecution.Command{
		WorkingDirectory: "out",
		OutputPaths:      []string{"ln", "sub/fresh.txt", "new.bin", "sub", "old.txt", "../src"},
	})
	must(t, err)
	if len(res.OutputSymlinks) != 1 || res.OutputSymlinks[0].Path != "ln" || len(res.OutputFileSymlinks) != 0 {
		t.Fatalf("symlinks %v / %v", res.OutputSymlinks, res.OutputFileSymlinks)
	}
	// sub/fresh.txt is reached twice (as a file and inside sub):
	// both must carry its digest.
	if len(res.OutputFiles) != 2 || res.OutputFiles[0].Path != "new.bin" || !res.OutputFiles[0].IsExecutable ||
		res.OutputFiles[1].Digest.Hash != digestOf([]byte("fresh")).GetHashString() {
		t.Fatalf("files %v", res.OutputFiles)
	}
	if len(res.OutputDirectories) != 2 {
		t.Fatalf("directories %v", res.OutputDirectories)
	}
	// ../src comes from the root mount's lower only.
	if got := describe(t, f.tree(t, res.OutputDirectories[0].TreeDigest)); !reflect.DeepEqual(got, []string{"/ dir", "/a.c file " + h8("A"), "/b.c file " + h8("B")}) {
		t.Fatalf("../src tree %q", got)
	}
	if got := describe(t, f.tree(t, res.OutputDirectories[1].TreeDigest)); !reflect.DeepEqual(got, []string{"/ dir", "/fresh.txt file " + h8("fresh")}) {
		t.Fatalf("sub tree %q", got)
	}

	// A client sending both generations (output_paths wins) still
	// gets the per-kind symlink fields of REAPI 2.0.
	res, err = f.oc.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, &remoteexecution.Command{
		OutputPaths:       []string{"out/ln", "out"},
		OutputFiles:       []string{"out/ln", "out/ignored"},
		OutputDirectories: []string{"out"},
	})
	must(t, err)
	if len(res.OutputFileSymlinks) != 1 || len(res.OutputSymlinks) != 1 || len(res.OutputDirectories) != 1 || len(res.OutputFiles) != 0 {
		t.Fatalf("result %v", res)
	}
}

func TestCaptureErrors(t *testing.T) {
	f := newOutputFixture(t)
	f.act(t)
	_, err := f.oc.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, &remoteexecution.Command{OutputFiles: []string{"out"}})
	requireCode(t, err, codes.FailedPrecondition, "is a directory")
	_, err = f.oc.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, &remoteexecution.Command{OutputDirectories: []string{"keep"}})
	requireCode(t, err, codes.FailedPrecondition, "regular file")
	_, err = f.oc.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, &remoteexecution.Command{OutputPaths: []string{"../../etc"}})
	requireCode(t, err, codes.InvalidArgument, "leaves the exec root")
	strict := NewOutputCapturer(f.e.storage, OutputCapturerOptions{SymlinkAbsolutePathStrategy: remoteexecution.SymlinkAbsolutePathStrategy_DISALLOWED})
	_, err = strict.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, &remoteexecution.Command{OutputPaths: []string{"out"}})
	requireCode(t, err, codes.InvalidArgument, "absolute target")
}

func TestMkdirAllInMergedView(t *testing.T) {
	f := newOutputFixture(t)
	must(t, MkdirAll(f.r, f.uppers, "out/gen/x"))
	must(t, MkdirAll(f.r, f.uppers, "src/gen"))
	must(t, MkdirAll(f.r, f.uppers, "bazel-out/k8/bin"))
	must(t, MkdirAll(f.r, f.uppers, "out/sub")) // exists in the lower: nothing to do
	for _, p := range []string{"1/gen/x", "0/src/gen", "0/bazel-out/k8/bin"} {
		info, err := os.Stat(filepath.Join(f.e.dir, "upper", p))
		if err != nil || !info.IsDir() || info.Mode().Perm() != 0o755 {
			t.Fatalf("%s: %v %v", p, info, err)
		}
	}
	if _, err := os.Stat(filepath.Join(f.uppers[1], "sub")); !os.IsNotExist(err) {
		t.Fatal("existing lower directory copied needlessly")
	}
	requireCode(t, MkdirAll(f.r, f.uppers, "keep/x"), codes.FailedPrecondition, "not a directory")
	requireCode(t, MkdirAll(f.r, f.uppers, "../x"), codes.InvalidArgument)
	// What MkdirAll made shows in the merged view.
	res, err := f.oc.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, &remoteexecution.Command{OutputDirectories: []string{"out/gen"}})
	must(t, err)
	if len(res.OutputDirectories) != 1 {
		t.Fatalf("out/gen not seen: %v", res)
	}
}

func TestUploadFile(t *testing.T) {
	e := newTestEnv(t, layers.MaterializerOptions{})
	p := filepath.Join(tempDir(t), "stdout")
	must(t, os.WriteFile(p, []byte("log line\n"), 0o644))
	oc := NewOutputCapturer(e.storage, OutputCapturerOptions{})
	d, err := oc.UploadFile(context.Background(), digest.EmptyInstanceName, sha256Function, p)
	must(t, err)
	if d != digestOf([]byte("log line\n")) {
		t.Fatalf("digest %s", d)
	}
	data, err := e.storage.ContentAddressableStorage.Get(context.Background(), d).ToByteSlice(100)
	must(t, err)
	if string(data) != "log line\n" {
		t.Fatalf("stored %q", data)
	}
}

func TestCaptureMtime(t *testing.T) {
	f := newOutputFixture(t)
	f.write(t, 1, "stamped", "s", 0o644)
	stamp := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	must(t, os.Chtimes(filepath.Join(f.uppers[1], "stamped"), stamp, stamp))
	res, err := f.oc.Capture(context.Background(), digest.EmptyInstanceName, f.r, f.uppers, &remoteexecution.Command{
		OutputPaths:          []string{"out/stamped", "out/keep.txt"},
		OutputNodeProperties: []string{"mtime"},
	})
	must(t, err)
	if len(res.OutputFiles) != 2 {
		t.Fatalf("files %v", res.OutputFiles)
	}
	if got := res.OutputFiles[1].NodeProperties.GetMtime().AsTime(); !got.Equal(stamp) {
		t.Fatalf("mtime %v, want %v", got, stamp)
	}
	if res.OutputFiles[1].NodeProperties.GetUnixMode() != nil {
		t.Fatal("unix_mode reported without being asked for")
	}
	// An untouched input reports the mtime of its inode in the layer.
	info, err := os.Stat(filepath.Join(f.r.Mounts[1].Layers[0], "keep.txt"))
	must(t, err)
	if got := res.OutputFiles[0].NodeProperties.GetMtime().AsTime(); !got.Equal(info.ModTime()) {
		t.Fatalf("input mtime %v, want %v", got, info.ModTime())
	}
}

// TestOtherDigestFunctions materialises and captures with every digest
// function bb-storage supports. BLAKE3 and SHA-256 hashes have the same
// length, so the caches must keep them apart by function too.
func TestOtherDigestFunctions(t *testing.T) {
	e := newTestEnv(t, layers.MaterializerOptions{})
	for _, f := range digest.SupportedDigestFunctions {
		fn := digest.MustNewFunction("", f)
		t.Run(f.String(), func(t *testing.T) {
			put := func(data []byte) digest.Digest {
				g := fn.NewGenerator(int64(len(data)))
				g.Write(data)
				d := g.Sum()
				must(t, e.storage.ContentAddressableStorage.Put(context.Background(), d, buffer.NewValidatedBufferFromByteSlice(data)))
				return d
			}
			content := []byte("content under " + f.String())
			dirMsg := &remoteexecution.Directory{Files: []*remoteexecution.FileNode{{Name: "f", Digest: put(content).GetProto(), IsExecutable: true}}}
			root := put(marshal(dirMsg))
			r, err := e.m.Materialize(context.Background(), digest.EmptyInstanceName, root)
			must(t, err)
			defer r.Release()
			got, err := os.ReadFile(filepath.Join(r.Mounts[0].Layers[0], "f"))
			must(t, err)
			if string(got) != string(content) {
				t.Fatalf("content %q", got)
			}
			upper := tempDir(t)
			must(t, os.WriteFile(filepath.Join(upper, "out"), []byte("out"), 0o644))
			res, err := NewOutputCapturer(e.storage, OutputCapturerOptions{}).Capture(context.Background(), digest.EmptyInstanceName, r, []string{upper}, &remoteexecution.Command{OutputPaths: []string{"out", "f"}})
			must(t, err)
			if len(res.OutputFiles) != 2 || res.OutputFiles[0].Digest.Hash != dirMsg.Files[0].Digest.Hash {
				t.Fatalf("outputs %v", res.OutputFiles)
			}
			if len(res.OutputFiles[1].Digest.Hash) != len(dirMsg.Files[0].Digest.Hash) {
				t.Fatal("output hashed with another function")
			}
		})
	}
}
