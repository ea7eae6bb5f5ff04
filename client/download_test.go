package client

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// put stores data in the fake's CAS and returns its digest.
func (f *fakeREAPI) put(data []byte) *remoteexecution.Digest {
	d := digestOfBytes(data)
	f.mu.Lock()
	f.blobs[d.Hash] = data
	f.mu.Unlock()
	return d
}

func (f *fakeREAPI) putMessage(t *testing.T, m proto.Message) *remoteexecution.Digest {
	t.Helper()
	_, data, err := Encode(fakeFunction, m)
	if err != nil {
		t.Fatal(err)
	}
	return f.put(data)
}

// Download writes files with their modes and times, symlinks as
// symlinks and directories from their Trees, and reports each output.
func TestDownloadWritesEveryKindOfOutput(t *testing.T) {
	f := newFakeREAPI()
	r := f.dial(t, "")
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	sub := &remoteexecution.Directory{
		Files:          []*remoteexecution.FileNode{{Name: "deep", Digest: f.put([]byte("deep\n"))}},
		NodeProperties: &remoteexecution.NodeProperties{UnixMode: wrapperspb.UInt32(0o750)},
	}
	_, subData, err := Encode(fakeFunction, sub)
	if err != nil {
		t.Fatal(err)
	}
	subDigest := digestOfBytes(subData)
	tree := &remoteexecution.Tree{
		Root: &remoteexecution.Directory{
			Files:       []*remoteexecution.FileNode{{Name: "tool", Digest: f.put([]byte("#!/bin/sh\n")), IsExecutable: true}},
			Directories: []*remoteexecution.DirectoryNode{{Name: "sub", Digest: subDigest}},
			Symlinks:    []*remoteexecution.SymlinkNode{{Name: "link", Target: "sub/deep"}},
		},
		Children: []*remoteexecution.Directory{sub},
	}
	result := &remoteexecution.ActionResult{
		OutputFiles: []*remoteexecution.OutputFile{
			{Path: "out/plain", Digest: f.put([]byte("plain\n"))},
			{Path: "out/setgid", Digest: f.put([]byte("modes\n")), NodeProperties: &remoteexecution.NodeProperties{
				UnixMode: wrapperspb.UInt32(0o2710), Mtime: timestamppb.New(mtime),
			}},
		},
		// The same symlink in both the new and the legacy field is
		// written once.
		OutputSymlinks:     []*remoteexecution.OutputSymlink{{Path: "out/to-plain", Target: "plain"}},
		OutputFileSymlinks: []*remoteexecution.OutputSymlink{{Path: "out/to-plain", Target: "plain"}},
		OutputDirectories:  []*remoteexecution.OutputDirectory{{Path: "tree", TreeDigest: f.putMessage(t, tree)}},
	}
	dest := t.TempDir()
	var reported [][2]int
	if err := r.Download(context.Background(), result, dest, downloadProgress(func(done, total int) { reported = append(reported, [2]int{done, total}) })); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"out/plain": "plain\n", "out/setgid": "modes\n", "tree/tool": "#!/bin/sh\n", "tree/sub/deep": "deep\n", "tree/link": "deep\n", "out/to-plain": "plain\n"} {
		if got, err := os.ReadFile(filepath.Join(dest, path)); err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", path, got, err, want)
		}
	}
	for path, want := range map[string]os.FileMode{"out/plain": 0o644, "out/setgid": 0o710 | os.ModeSetgid, "tree/tool": 0o755, "tree/sub": 0o750 | os.ModeDir} {
		if info, err := os.Stat(filepath.Join(dest, path)); err != nil || info.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, modeOf(info), err, want)
		}
	}
	if info, err := os.Stat(filepath.Join(dest, "out/setgid")); err != nil || !info.ModTime().Equal(mtime) {
		t.Errorf("out/setgid: mtime %v, want %v", info.ModTime(), mtime)
	}
	for path, want := range map[string]string{"out/to-plain": "plain", "tree/link": "sub/deep"} {
		if target, err := os.Readlink(filepath.Join(dest, path)); err != nil || target != want {
			t.Errorf("%s: symlink to %q (%v), want %q", path, target, err, want)
		}
	}
	if last := reported[len(reported)-1]; len(reported) != 5 || last != [2]int{4, 4} {
		t.Errorf("progress %v, want 0..4 of 4", reported)
	}
}

func modeOf(info os.FileInfo) os.FileMode {
	if info == nil {
		return 0
	}
	return info.Mode()
}

type downloadProgress func(done, total int)

func (downloadProgress) Uploading(int, int, int64, int64)           {}
func (downloadProgress) Stage(remoteexecution.ExecutionStage_Value) {}
func (p downloadProgress) Downloading(done, total int)              { p(done, total) }

// Outputs that would land outside the destination, names with slashes
// or dots in a Tree and a Tree that lacks a directory are refused, each
// named, and nothing is written outside dest.
func TestDownloadRefusesWhatWouldLeaveTheDestination(t *testing.T) {
	f := newFakeREAPI()
	r := f.dial(t, "")
	content := f.put([]byte("x"))
	missing := digestOfBytes([]byte("a directory the Tree does not hold"))
	treeWith := func(root *remoteexecution.Directory) *remoteexecution.ActionResult {
		return &remoteexecution.ActionResult{OutputDirectories: []*remoteexecution.OutputDirectory{{Path: "d", TreeDigest: f.putMessage(t, &remoteexecution.Tree{Root: root})}}}
	}
	for name, c := range map[string]struct {
		result *remoteexecution.ActionResult
		want   string
	}{
		"file climbing out":     {&remoteexecution.ActionResult{OutputFiles: []*remoteexecution.OutputFile{{Path: "../escaped", Digest: content}}}, `"../escaped"`},
		"absolute file":         {&remoteexecution.ActionResult{OutputFiles: []*remoteexecution.OutputFile{{Path: "/etc/escaped", Digest: content}}}, `"/etc/escaped"`},
		"symlink climbing out":  {&remoteexecution.ActionResult{OutputSymlinks: []*remoteexecution.OutputSymlink{{Path: "a/../../escaped", Target: "x"}}}, `"a/../../escaped"`},
		"directory climbing":    {&remoteexecution.ActionResult{OutputDirectories: []*remoteexecution.OutputDirectory{{Path: "..", TreeDigest: content}}}, `".."`},
		"file name with slash":  {treeWith(&remoteexecution.Directory{Files: []*remoteexecution.FileNode{{Name: "a/b", Digest: content}}}), `"a/b"`},
		"symlink named dot-dot": {treeWith(&remoteexecution.Directory{Symlinks: []*remoteexecution.SymlinkNode{{Name: "..", Target: "x"}}}), `".."`},
		"directory named dot":   {treeWith(&remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{{Name: ".", Digest: missing}}}), `"."`},
		"missing child":         {treeWith(&remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{{Name: "child", Digest: missing}}}), missing.Hash},
	} {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dest := filepath.Join(parent, "dest")
			err := r.Download(context.Background(), c.result, dest, downloadProgress(func(int, int) {}))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v, want an error naming %s", err, c.want)
			}
			if entries, _ := os.ReadDir(parent); len(entries) > 1 || (len(entries) == 1 && entries[0].Name() != "dest") {
				t.Errorf("written beside dest: %v", entries)
			}
		})
	}
}
