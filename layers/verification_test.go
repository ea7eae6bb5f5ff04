package layers

import (
	"bytes"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"
)

func fetchedFiles() float64 { return counterValue(fileCacheMisses) }

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// restart closes the caches and opens them again on the same
// directories, as a new worker process would.
func (e *testEnv) restart() {
	e.t.Helper()
	e.files.Close()
	e.layers.Close()
	unix.Close(e.files.dirFd)
	var err error
	if e.files, err = newFileCache(filepath.Join(e.dir, "files"), 1<<30, 1<<20, sysLinkat); err != nil {
		e.t.Fatal(err)
	}
	if e.layers, err = newLayerCache(filepath.Join(e.dir, "layers"), 1<<30, 1<<20); err != nil {
		e.t.Fatal(err)
	}
	e.m = NewMaterializer(e.storage, e.files, e.layers, MaterializerOptions{})
}

// overwrite replaces the bytes of a read-only file in place (same
// inode, size and mode), as bit rot or a change by hand would.
func overwrite(t *testing.T, p, content string) {
	t.Helper()
	info, err := os.Stat(p)
	must(t, err)
	must(t, os.Chmod(p, 0o644))
	must(t, os.WriteFile(p, []byte(content), 0o644))
	must(t, os.Chmod(p, info.Mode().Perm()))
}

// A cached file whose bytes changed on disk, in the file cache (and so
// in the layers linking it) or in a layer alone, is not served after a
// restart: it is dropped, logged and fetched or built again, and the
// input root has the right bytes.
func TestCorruptCacheEntriesAreDroppedAfterRestart(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	root := e.putTree(dir{"a": file("hello"), "sub": dir{"b": file("world")}})
	r := e.mustMaterialize(root)
	layer := r.Mounts[0].Layers[0]
	r.Release()

	// Same size, same mode, same name: only the content is wrong.
	overwrite(t, filepath.Join(e.dir, "files", "files", fileName(FileKey{Digest: digestOf([]byte("hello"))})), "HELLO")
	// A layer's own file replaced by another inode.
	sub := filepath.Join(layer, "sub")
	must(t, os.Chmod(sub, 0o755))
	must(t, os.Remove(filepath.Join(sub, "b")))
	must(t, os.WriteFile(filepath.Join(sub, "b"), []byte("WORLD"), 0o444))
	must(t, os.Chmod(sub, 0o555))

	var logs bytes.Buffer
	log.SetOutput(&logs)
	defer log.SetOutput(os.Stderr)
	e.restart()
	before, corrupt := fetchedFiles(), counterValue(fileCacheCorrupt)
	r = e.mustMaterialize(root)
	defer r.Release()
	if n := counterValue(fileCacheCorrupt) - corrupt; n != 1 {
		t.Errorf("%v corrupt files found, want 1", n)
	}
	got := strings.Join(readTree(t, r.Mounts[0].Layers[0]), "\n")
	want := ". dir -r-xr-xr-x\na file -r--r--r-- hello\nsub dir -r-xr-xr-x\nsub/b file -r--r--r-- world"
	if got != want {
		t.Errorf("after the restart the input root is\n%s\nwant\n%s", got, want)
	}
	if fetchedFiles() != before {
		t.Errorf("%v files fetched as new, want none: the corrupt one counts as corrupt", fetchedFiles()-before)
	}
	if !strings.Contains(logs.String(), "file cache: dropped") || !strings.Contains(logs.String(), "layer cache: dropped") {
		t.Errorf("the log does not say what was dropped:\n%s", logs.String())
	}

	// Once verified, entries are served as they are: no more
	// fetches, the same layer.
	e.m = NewMaterializer(e.storage, e.files, e.layers, MaterializerOptions{})
	before = fetchedFiles()
	r2 := e.mustMaterialize(root)
	defer r2.Release()
	if r2.Mounts[0].Layers[0] != r.Mounts[0].Layers[0] || fetchedFiles() != before {
		t.Error("a verified layer was not reused")
	}
}

// An intact layer of a previous run is kept: checked, not rebuilt.
func TestIntactCacheEntriesAreKeptAfterRestart(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	root := e.putTree(dir{"a": file("hello"), "sub": dir{"b": file("world")}, "l": symlink("a")})
	r := e.mustMaterialize(root)
	layer := r.Mounts[0].Layers[0]
	r.Release()
	e.restart()
	before := fetchedFiles()
	r = e.mustMaterialize(root)
	defer r.Release()
	if r.Mounts[0].Layers[0] != layer || fetchedFiles() != before {
		t.Errorf("intact layer rebuilt or files fetched again (%v files fetched)", fetchedFiles()-before)
	}
}
