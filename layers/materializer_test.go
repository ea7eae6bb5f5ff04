package layers

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"testing"

	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

func TestMaterializeBuildsReadOnlyLayer(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	root := e.putTree(dir{
		"a.txt": file("hello"),
		"bin":   dir{"tool": exe("#!/bin/sh\n")},
		"empty": dir{},
		"link":  symlink("bin/tool"),
		"sub":   dir{"deep": dir{"x": file("x")}, "up": symlink("../a.txt")},
	})
	r := e.mustMaterialize(root)
	if len(r.Mounts) != 1 || r.Mounts[0].Path != "" || len(r.Mounts[0].Layers) != 1 {
		t.Fatalf("mounts %+v", r.Mounts)
	}
	got := readTree(t, r.Mounts[0].Layers[0])
	want := []string{
		". dir -r-xr-xr-x",
		"a.txt file -r--r--r-- hello",
		"bin dir -r-xr-xr-x",
		"bin/tool file -r-xr-xr-x #!/bin/sh\n",
		"empty dir -r-xr-xr-x",
		"link symlink bin/tool",
		"sub dir -r-xr-xr-x",
		"sub/deep dir -r-xr-xr-x",
		"sub/deep/x file -r--r--r-- x",
		"sub/up symlink ../a.txt",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("layer:\n%q\nwant\n%q", got, want)
	}
	// Every directory from the cache root down is searchable by any uid.
	for p := r.Mounts[0].Layers[0]; p != e.dir; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o111 != 0o111 {
			t.Fatalf("%s has mode %o", p, st.Mode&0o777)
		}
	}
	// A second request is served from the cache: same directory.
	r2 := e.mustMaterialize(root)
	if r2.Mounts[0].Layers[0] != r.Mounts[0].Layers[0] {
		t.Fatalf("second materialisation used %s, not %s", r2.Mounts[0].Layers[0], r.Mounts[0].Layers[0])
	}
}

func TestMaterializeEmptyRoot(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	// The empty Directory need not be stored: REAPI says the empty
	// blob always exists.
	r := e.mustMaterialize(digestOf(nil))
	if got := readTree(t, r.Mounts[0].Layers[0]); !reflect.DeepEqual(got, []string{". dir -r-xr-xr-x"}) {
		t.Fatalf("got %q", got)
	}
}

func TestLayerFilesShareInodesWithFileCache(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	r := e.mustMaterialize(e.putTree(dir{"a": file("same"), "b": file("same"), "c": dir{"d": file("same")}}))
	var inodes []uint64
	for _, p := range []string{"a", "b", "c/d"} {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(r.Mounts[0].Layers[0], p), &st); err != nil {
			t.Fatal(err)
		}
		inodes = append(inodes, st.Ino)
	}
	if inodes[0] != inodes[1] || inodes[1] != inodes[2] {
		t.Fatalf("identical files are separate inodes: %v", inodes)
	}
}

func TestConcurrentMaterializeBuildsOnce(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	tree := dir{}
	for i := 0; i < 50; i++ {
		tree[string(rune('a'+i%26))+string(rune('a'+i/26))] = file(string(rune(i)) + "content")
	}
	root := e.putTree(tree)

	// Wrap the layer cache's build function to count builds.
	var builds sync.Map
	counting := &countingLayerCache{LayerCache: e.layers, builds: &builds}
	m := NewMaterializer(e.storage, e.files, counting, MaterializerOptions{})
	const n = 16
	roots := make([]*InputRoot, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			roots[i], errs[i] = m.Materialize(context.Background(), digest.EmptyInstanceName, root)
		}(i)
	}
	close(start)
	wg.Wait()
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		defer roots[i].Release()
		if roots[i].Mounts[0].Layers[0] != roots[0].Mounts[0].Layers[0] {
			t.Fatal("actions got different layers")
		}
	}
	total := 0
	builds.Range(func(_, v any) bool { total += v.(int); return true })
	if total != 1 {
		t.Fatalf("layer built %d times", total)
	}
}

// countingLayerCache counts calls of the build functions it passes on.
type countingLayerCache struct {
	LayerCache
	mu     sync.Mutex
	builds *sync.Map
}

func (c *countingLayerCache) GetOrBuild(ctx context.Context, key digest.Digest, build LayerBuildFunc) (LayerLease, error) {
	return c.GetOrBuildChecked(ctx, key, build, nil)
}

func (c *countingLayerCache) GetOrBuildChecked(ctx context.Context, key digest.Digest, build LayerBuildFunc, check LayerCheckFunc) (LayerLease, error) {
	return c.LayerCache.GetOrBuildChecked(ctx, key, func(ctx context.Context, dir string) (LayerStats, error) {
		c.mu.Lock()
		v, _ := c.builds.LoadOrStore(key, 0)
		c.builds.Store(key, v.(int)+1)
		c.mu.Unlock()
		return build(ctx, dir)
	}, check)
}

func TestMissingBlobsAllListed(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	e.putBlob([]byte("present"))
	subDir := e.directoryOf(dir{"m2": file("missing two"), "ok": file("present")}, false)
	goneDir := e.directoryOf(dir{"x": file("not stored either")}, false)
	e.putDirectory(subDir)
	rootDir := e.directoryOf(dir{"m1": file("missing one"), "sub": subDir, "gone": goneDir}, false)
	root := e.putDirectory(rootDir)

	_, err := e.materialize(root)
	got := missingSubjects(t, err)
	want := []string{subject(digestOf([]byte("missing one"))), subject(digestOf([]byte("missing two"))), subject(digestOf(marshal(goneDir)))}
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("missing %q, want %q", got, want)
	}

	// Once the directory is there, its file is reported instead.
	e.putDirectory(goneDir)
	_, err = e.materialize(root)
	got = missingSubjects(t, err)
	want = []string{subject(digestOf([]byte("missing one"))), subject(digestOf([]byte("missing two"))), subject(digestOf([]byte("not stored either")))}
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("missing %q, want %q", got, want)
	}

	// And once everything is there, it materialises.
	e.putBlob([]byte("missing one"))
	e.putBlob([]byte("missing two"))
	e.putBlob([]byte("not stored either"))
	e.mustMaterialize(root)
}

func TestCorruptBlobRejectedAndNotCached(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	good := []byte("the real content")
	d := digestOf(good)
	// Store wrong bytes of the same size under the digest.
	bad := []byte("the fake content")
	if err := e.storage.ContentAddressableStorage.Put(context.Background(), d, bufferFromBytes(bad)); err != nil {
		t.Fatal(err)
	}
	root := e.putDirectory(e.directoryOf(dir{"f": file(good)}, false))
	_, err := e.materialize(root)
	requireCode(t, err, codes.Internal, "checksum")
	// The local store drops the corrupt block, so the blob is now
	// missing rather than served.
	_, err = e.materialize(root)
	if got := missingSubjects(t, err); !reflect.DeepEqual(got, []string{subject(d)}) {
		t.Fatalf("missing %q", got)
	}
	// Nothing was cached: no file, no layer.
	if n := countFiles(t, filepath.Join(e.dir, "files", "files")); n != 0 {
		t.Fatalf("%d files in the file cache", n)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.dir, "layers", "layers")); len(entries) != 0 {
		t.Fatalf("layer published: %v", entries)
	}
	e.putBlob(good)
	r := e.mustMaterialize(root)
	if data, _ := os.ReadFile(filepath.Join(r.Mounts[0].Layers[0], "f")); string(data) != string(good) {
		t.Fatalf("content %q", data)
	}
}

func bufferFromBytes(data []byte) buffer.Buffer {
	return buffer.NewValidatedBufferFromByteSlice(data)
}

func countFiles(t testing.TB, root string) int {
	n := 0
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func TestEMLINKFallsBackToCopies(t *testing.T) {
	// Simulate a file system allowing 3 links per inode.
	link := func(oldDirFd int, oldPath string, newDirFd int, newPath string) error {
		var st unix.Stat_t
		if err := unix.Fstatat(oldDirFd, oldPath, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if st.Nlink >= 3 {
			return unix.EMLINK
		}
		return unix.Linkat(oldDirFd, oldPath, newDirFd, newPath, 0)
	}
	e := newTestEnvWithLink(t, MaterializerOptions{}, link)
	tree := dir{}
	for i := 0; i < 20; i++ {
		tree["f"+string(rune('a'+i))] = file("shared content")
	}
	r := e.mustMaterialize(e.putTree(tree))
	inodes := map[uint64]bool{}
	for name := range tree {
		p := filepath.Join(r.Mounts[0].Layers[0], name)
		data, err := os.ReadFile(p)
		if err != nil || string(data) != "shared content" {
			t.Fatalf("%s: %q %v", name, data, err)
		}
		var st unix.Stat_t
		unix.Stat(p, &st)
		if st.Nlink > 3 {
			t.Fatalf("link limit exceeded: %d", st.Nlink)
		}
		if st.Mode&0o777 != 0o444 {
			t.Fatalf("%s mode %o", name, st.Mode&0o777)
		}
		inodes[st.Ino] = true
	}
	if len(inodes) < 2 {
		t.Fatal("no fresh inodes were made")
	}
}

// TestEvictionRacingWithMaterialisation materialises several roots
// concurrently with caches far too small for them: layers and files
// are evicted constantly, yet every action sees its complete input
// for as long as it holds the lease.
func TestEvictionRacingWithMaterialisation(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	fc, err := newFileCache(filepath.Join(e.dir, "small-files"), 64, 3, sysLinkat)
	must(t, err)
	lc, err := newLayerCache(filepath.Join(e.dir, "small-layers"), 40, 1<<20)
	must(t, err)
	m := NewMaterializer(e.storage, fc, lc, MaterializerOptions{})
	var roots []digest.Digest
	var want [][]string
	for i := 0; i < 5; i++ {
		tree := dir{"shared": file("shared"), "own": file("own " + string(rune('a'+i))), "d": dir{"x": file(string(rune('a'+i)) + " in d")}}
		roots = append(roots, e.putTree(tree))
		want = append(want, []string{". dir -r-xr-xr-x", "d dir -r-xr-xr-x", "d/x file -r--r--r-- " + string(rune('a'+i)) + " in d", "own file -r--r--r-- own " + string(rune('a'+i)), "shared file -r--r--r-- shared"})
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				k := (g + i) % len(roots)
				r, err := m.Materialize(context.Background(), digest.EmptyInstanceName, roots[k])
				if err != nil {
					t.Error(err)
					return
				}
				if got := readTree(t, r.Mounts[0].Layers[0]); !reflect.DeepEqual(got, want[k]) {
					t.Errorf("root %d: got %q", k, got)
				}
				r.Release()
			}
		}(g)
	}
	wg.Wait()
	lc.Close()
	if n := layerCacheEvictionsCount(); n == 0 {
		t.Fatal("nothing was evicted; the test proves nothing")
	}
}

func TestMaterializeInInstance(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	root := e.putTree(dir{"f": file("f")})
	instance, err := digest.NewInstanceName("some/instance")
	must(t, err)
	r, err := e.m.Materialize(context.Background(), instance, root)
	must(t, err)
	defer r.Release()
	if r.Root.GetInstanceName() != instance {
		t.Fatalf("root in instance %q", r.Root.GetInstanceName())
	}
}
