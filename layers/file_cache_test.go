package layers

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestFileCacheSurvivesRestartAndDropsDamagedFiles(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	dir := filepath.Join(e.dir, "fc")
	fc, err := newFileCache(dir, 1<<20, 100, sysLinkat)
	must(t, err)
	keys := []FileKey{{Digest: e.putBlob([]byte("one"))}, {Digest: e.putBlob([]byte("two")), Executable: true}}
	set, missing, err := fc.Acquire(context.Background(), e.storage, keys)
	must(t, err)
	if len(missing) != 0 {
		t.Fatal(missing)
	}
	set.Release()

	// Damage one cache file (as a torn write would) and leave a
	// temporary file behind (as a crash mid-write would).
	damaged := filepath.Join(dir, "files", fileName(keys[0]))
	must(t, os.Chmod(damaged, 0o644))
	must(t, os.WriteFile(damaged, []byte("on"), 0o444))
	must(t, os.Chmod(damaged, 0o444)) // only the size gives it away
	must(t, os.WriteFile(filepath.Join(dir, "tmp", "123"), []byte("partial"), 0o600))

	fc, err = newFileCache(dir, 1<<20, 100, sysLinkat)
	must(t, err)
	if entries, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(entries) != 0 {
		t.Fatal("temporary files kept")
	}
	if _, ok := fc.entries[keys[0]]; ok {
		t.Fatal("damaged file indexed")
	}
	if _, ok := fc.entries[keys[1]]; !ok {
		t.Fatal("intact file lost on restart")
	}
	before := e.cas.Puts.Load()
	set, _, err = fc.Acquire(context.Background(), e.storage, keys)
	must(t, err)
	defer set.Release()
	data, err := os.ReadFile(damaged)
	must(t, err)
	if string(data) != "one" || e.cas.Puts.Load() != before {
		t.Fatalf("refetched content %q", data)
	}
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(dir, "files", fileName(keys[1])), &st))
	if st.Mode&0o7777 != 0o555 {
		t.Fatalf("executable cache file mode %o", st.Mode&0o7777)
	}
}

func TestFileCacheEvictsUnpinnedOnly(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	fc, err := newFileCache(filepath.Join(e.dir, "fc"), 1<<20, 2, sysLinkat)
	must(t, err)
	var keys []FileKey
	for _, s := range []string{"a", "b", "c"} {
		keys = append(keys, FileKey{Digest: e.putBlob([]byte(s))})
	}
	// All three pinned: over the count budget, none may go.
	set, _, err := fc.Acquire(context.Background(), e.storage, keys)
	must(t, err)
	for _, k := range keys {
		if _, err := os.Stat(filepath.Join(e.dir, "fc", "files", fileName(k))); err != nil {
			t.Fatalf("pinned file evicted: %v", err)
		}
	}
	set.Release()
	if n := len(fc.entries); n != 2 {
		t.Fatalf("%d files after release, budget 2", n)
	}
}

func TestCachedFilesAndLayersHaveTheFixedTimestampAndTheOwner(t *testing.T) {
	owner := &Owner{UID: os.Getuid(), GID: os.Getgid()}
	if os.Getuid() == 0 {
		// As root, a worker gives its caches to the actions' root.
		owner = &Owner{UID: 1234567, GID: 7654321}
	}
	e := newTestEnv(t, MaterializerOptions{Owner: owner})
	fc, err := NewFileCache(filepath.Join(e.dir, "owned"), 1<<20, 100, owner)
	must(t, err)
	key := FileKey{Digest: e.putBlob([]byte("owned content"))}
	set, _, err := fc.Acquire(context.Background(), e.storage, []FileKey{key})
	must(t, err)
	defer set.Release()
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(e.dir, "owned", "files", fileName(key)), &st))
	if st.Mtim.Sec != InputTimestamp.Unix() {
		t.Errorf("cached file mtime %d, want %d", st.Mtim.Sec, InputTimestamp.Unix())
	}
	if int(st.Uid) != owner.UID || int(st.Gid) != owner.GID {
		t.Errorf("cached file owned by %d:%d, want %d:%d", st.Uid, st.Gid, owner.UID, owner.GID)
	}

	// Layer directories go to the same owner.
	r := e.mustMaterialize(e.putTree(dir{"sub": dir{"deeper": dir{"f": file("x"), "l": symlink("f")}}}))
	defer r.Release()
	for _, p := range []string{"", "sub", "sub/deeper", "sub/deeper/l"} {
		must(t, unix.Lstat(filepath.Join(r.Mounts[0].Layers[0], p), &st))
		if int(st.Uid) != owner.UID || int(st.Gid) != owner.GID {
			t.Errorf("layer entry %q owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, owner.UID, owner.GID)
		}
	}
}

func TestInputNodePropertiesSetModeAndTimestamp(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	content := e.putBlob([]byte("built earlier"))
	when := time.Date(2021, 3, 4, 5, 6, 7, 8000, time.UTC)
	root := e.putDirectory(&remoteexecution.Directory{Files: []*remoteexecution.FileNode{
		{Name: "dated", Digest: content.GetProto(), NodeProperties: &remoteexecution.NodeProperties{
			UnixMode: wrapperspb.UInt32(0o4640), Mtime: timestamppb.New(when),
		}},
		{Name: "plain", Digest: content.GetProto()},
	}})
	r := e.mustMaterialize(root)
	defer r.Release()
	var dated, plain unix.Stat_t
	must(t, unix.Stat(filepath.Join(r.Mounts[0].Layers[0], "dated"), &dated))
	must(t, unix.Stat(filepath.Join(r.Mounts[0].Layers[0], "plain"), &plain))
	// Permission bits honoured, setuid not: a cached inode is never
	// setuid.
	if dated.Mode&0o7777 != 0o640 || dated.Mtim.Nano() != when.UnixNano() {
		t.Errorf("dated file: mode %o mtime %v, want 0640 and %v", dated.Mode&0o7777, time.Unix(0, dated.Mtim.Nano()).UTC(), when)
	}
	if plain.Mode&0o7777 != 0o444 || plain.Mtim.Sec != InputTimestamp.Unix() {
		t.Errorf("plain file: mode %o mtime %d", plain.Mode&0o7777, plain.Mtim.Sec)
	}
	if dated.Ino == plain.Ino {
		t.Error("one inode serves two timestamps")
	}
	// Both variants survive a restart of the cache.
	fc, err := newFileCache(filepath.Join(e.dir, "files"), 1<<30, 1<<20, sysLinkat)
	must(t, err)
	if len(fc.entries) < 2 {
		t.Errorf("after a restart the cache indexes %d files", len(fc.entries))
	}
}
