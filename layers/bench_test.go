package layers

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layerproperty"
	"github.com/bitzel/bitzel-worker/layers/layerstest"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"golang.org/x/sys/unix"
)

// Benchmarks print ratios against baselines measured in the same run
// (cp -a, cp -al, sha256sum), since absolute times drift between
// machines. They never assert on time.

// benchTree is an input tree generated once per run: on disk under
// src (for the cp baselines) and in the local CAS of env.
type benchTree struct {
	env  *testEnv
	src  string
	root digest.Digest
}

var (
	benchTrees   = map[string]*benchTree{}
	benchTreesMu sync.Mutex
)

// getBenchTree builds dirs×perDir files; distinct is the number of
// distinct contents (files cycle through them), each size bytes.
// The tree is written to src only when withSrc (for cp baselines).
func getBenchTree(b *testing.B, name string, dirs, perDir, distinct, size int, withSrc bool) *benchTree {
	benchTreesMu.Lock()
	defer benchTreesMu.Unlock()
	if bt, ok := benchTrees[name]; ok {
		return bt
	}
	b.Helper()
	base, err := os.MkdirTemp("", "bitzel-cas-bench-")
	if err != nil {
		b.Fatal(err)
	}
	benchCleanups = append(benchCleanups, func() { removeTree(base) })
	env := newBenchEnv(b, base, 2<<30)
	rng := rand.New(rand.NewSource(1))
	contents := make([][]byte, distinct)
	digests := make([]*remoteexecution.Digest, distinct)
	for i := range contents {
		contents[i] = make([]byte, size)
		rng.Read(contents[i])
		digests[i] = env.putBlob(contents[i]).GetProto()
	}
	src := filepath.Join(base, "src")
	root := &remoteexecution.Directory{}
	n := 0
	for d := 0; d < dirs; d++ {
		dname := fmt.Sprintf("d%04d", d)
		dpath := filepath.Join(src, dname)
		if withSrc {
			if err := os.MkdirAll(dpath, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		sub := &remoteexecution.Directory{}
		for f := 0; f < perDir; f++ {
			fname := fmt.Sprintf("f%05d.c", f)
			if withSrc {
				if err := os.WriteFile(filepath.Join(dpath, fname), contents[n%distinct], 0o644); err != nil {
					b.Fatal(err)
				}
			}
			sub.Files = append(sub.Files, &remoteexecution.FileNode{Name: fname, Digest: digests[n%distinct]})
			n++
		}
		root.Directories = append(root.Directories, &remoteexecution.DirectoryNode{Name: dname, Digest: env.putDirectory(sub).GetProto()})
	}
	bt := &benchTree{env: env, src: src, root: env.putDirectory(root)}
	benchTrees[name] = bt
	return bt
}

var benchCleanups []func()

func TestMain(m *testing.M) {
	code := m.Run()
	for _, c := range benchCleanups {
		c()
	}
	os.Exit(code)
}

// newBenchEnv is newTestEnv outside a test's temp dir, so that the
// data outlives one benchmark function.
func newBenchEnv(b *testing.B, base string, casSize int64) *testEnv {
	storage, err := storage.NewLocalStorage(filepath.Join(base, "storage"), casSize, 16<<20)
	if err != nil {
		b.Fatal(err)
	}
	counting := &layerstest.CountingBlobAccess{BlobAccess: storage.ContentAddressableStorage}
	storage.ContentAddressableStorage = counting
	e := &testEnv{t: b, dir: base, storage: storage, cas: counting}
	e.resetCaches(b, true)
	return e
}

// resetCaches opens new caches; files=false keeps the file cache.
func (e *testEnv) resetCaches(b *testing.B, files bool) {
	var err error
	if files {
		removeTree(filepath.Join(e.dir, "files"))
		if e.files, err = newFileCache(filepath.Join(e.dir, "files"), 8<<30, 1<<22, sysLinkat); err != nil {
			b.Fatal(err)
		}
	}
	removeTree(filepath.Join(e.dir, "layers"))
	if e.layers, err = newLayerCache(filepath.Join(e.dir, "layers"), 8<<30, 1<<24); err != nil {
		b.Fatal(err)
	}
	e.m = NewMaterializer(e.storage, e.files, e.layers, MaterializerOptions{})
}

func run(b *testing.B, name string, args ...string) time.Duration {
	start := time.Now()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s: %v: %s", name, err, out)
	}
	return time.Since(start)
}

// cpBaseline times `cp flag src dst` once per iteration count, with
// removal of dst outside the measurement.
func cpBaseline(b *testing.B, flag, src string, iterations int) time.Duration {
	var total time.Duration
	for i := 0; i < iterations; i++ {
		dst := filepath.Join(filepath.Dir(src), "cp-dst")
		removeTree(dst)
		total += run(b, "cp", flag, src, dst)
		removeTree(dst)
	}
	return total / time.Duration(iterations)
}

func (bt *benchTree) materialize(b *testing.B) *InputRoot {
	r, err := bt.env.m.Materialize(context.Background(), digest.EmptyInstanceName, bt.root)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

func tree10k(b *testing.B) *benchTree {
	// 100 dirs × 100 files of 4 KiB, all distinct: ~40 MB.
	return getBenchTree(b, "10k", 100, 100, 10000, 4096, true)
}

// BenchmarkMaterialize10kCold: empty file and layer caches, blobs read
// from the local CAS. Baseline: cp -a of the same tree.
func BenchmarkMaterialize10kCold(b *testing.B) {
	bt := tree10k(b)
	var ours time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		bt.env.resetCaches(b, true)
		b.StartTimer()
		start := time.Now()
		bt.materialize(b).Release()
		ours += time.Since(start)
	}
	b.StopTimer()
	base := cpBaseline(b, "-a", bt.src, min(b.N, 3))
	b.ReportMetric(float64(ours/time.Duration(b.N))/float64(base), "x_cp-a")
	b.ReportMetric(float64(base.Microseconds())/1000, "cp-a_ms")
}

// BenchmarkMaterialize10kWarmFiles: files already in the file cache,
// the layer is built from hardlinks. Baseline: cp -al.
func BenchmarkMaterialize10kWarmFiles(b *testing.B) {
	bt := tree10k(b)
	bt.env.resetCaches(b, true)
	bt.materialize(b).Release()
	var ours time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		bt.env.resetCaches(b, false)
		b.StartTimer()
		start := time.Now()
		bt.materialize(b).Release()
		ours += time.Since(start)
	}
	b.StopTimer()
	base := cpBaseline(b, "-al", bt.src, min(b.N, 5))
	b.ReportMetric(float64(ours/time.Duration(b.N))/float64(base), "x_cp-al")
	b.ReportMetric(float64(base.Microseconds())/1000, "cp-al_ms")
}

// warmPlacement times placing an already cached input root, in the
// same process (plan cached) and after a restart (plan recomputed
// from the Directory messages in the CAS).
func warmPlacement(b *testing.B, bt *benchTree) (time.Duration, time.Duration) {
	bt.env.resetCaches(b, true)
	bt.materialize(b).Release()
	start := time.Now()
	const reps = 200
	for i := 0; i < reps; i++ {
		bt.materialize(b).Release()
	}
	warm := time.Since(start) / reps
	// A new Materializer has no plan and no Directory cache.
	bt.env.m = NewMaterializer(bt.env.storage, bt.env.files, bt.env.layers, MaterializerOptions{})
	start = time.Now()
	bt.materialize(b).Release()
	restart := time.Since(start)
	return warm, restart
}

var warm10k time.Duration

// BenchmarkMaterialize10kWarm: the layer is cached; placing it is a
// lease. Baseline: cp -al (what a hardlinking worker does per action).
func BenchmarkMaterialize10kWarm(b *testing.B) {
	bt := tree10k(b)
	warm, restart := warmPlacement(b, bt)
	warm10k = warm
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bt.materialize(b).Release()
	}
	b.StopTimer()
	base := cpBaseline(b, "-al", bt.src, 3)
	b.ReportMetric(float64(warm.Nanoseconds())/1e6, "warm_ms")
	b.ReportMetric(float64(warm)/float64(base), "x_cp-al")
	b.ReportMetric(float64(restart.Nanoseconds())/1e6, "after_restart_ms")
}

// BenchmarkMaterialize100kWarm: ten times the files; placement must
// stay O(1): the metric x_10k_warm compares with the 10k tree in the
// same run.
func BenchmarkMaterialize100kWarm(b *testing.B) {
	small := tree10k(b)
	w10, _ := warmPlacement(b, small)
	// 1000 dirs × 100 files; 1000 distinct 256-byte contents, so the
	// one-time build is links, not writes.
	bt := getBenchTree(b, "100k", 1000, 100, 1000, 256, false)
	warm, restart := warmPlacement(b, bt)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bt.materialize(b).Release()
	}
	b.StopTimer()
	b.ReportMetric(float64(warm.Nanoseconds())/1e6, "warm_ms")
	b.ReportMetric(float64(warm)/float64(w10), "x_10k_warm")
	b.ReportMetric(float64(restart.Nanoseconds())/1e6, "after_restart_ms")
}

// BenchmarkUnion20Layers: a BitBake task's recipe-sysroot as the union
// (bitzel.layers) of 20 dependencies' sysroot-destdir trees, 10,000
// files in all. Cold: empty caches, blobs from the local CAS. Warm:
// every layer cached, so setting up the input root is 20 leases.
// Baseline: cp -al of the merged tree, which is what a hardlinking
// worker does for every task.
func BenchmarkUnion20Layers(b *testing.B) {
	const layers, perLayer = 20, 500
	base, err := os.MkdirTemp("", "bitzel-cas-union-")
	if err != nil {
		b.Fatal(err)
	}
	defer removeTree(base)
	env := newBenchEnv(b, base, 1<<30)
	defer env.storage.Close()
	merged := filepath.Join(base, "merged")
	var listed []string
	for l := 0; l < layers; l++ {
		lib := &remoteexecution.Directory{}
		include := &remoteexecution.Directory{}
		for f := 0; f < perLayer; f++ {
			content := []byte(fmt.Sprintf("dependency %d file %d\n", l, f))
			d := env.putBlob(content).GetProto()
			name := fmt.Sprintf("dep%02d-%04d", l, f)
			dir, sub := include, "usr/include"
			if f%2 == 1 {
				dir, sub = lib, "usr/lib"
			}
			dir.Files = append(dir.Files, &remoteexecution.FileNode{Name: name, Digest: d})
			p := filepath.Join(merged, sub, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(p, content, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		usr := &remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{
			{Name: "include", Digest: env.putDirectory(include).GetProto()},
			{Name: "lib", Digest: env.putDirectory(lib).GetProto()},
		}}
		tree := env.putDirectory(&remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{
			{Name: "usr", Digest: env.putDirectory(usr).GetProto()},
		}})
		listed = append(listed, layerString(tree))
	}
	sysroot := env.putDirectory(&remoteexecution.Directory{NodeProperties: &remoteexecution.NodeProperties{
		Properties: []*remoteexecution.NodeProperty{{Name: layerproperty.Name, Value: strings.Join(listed, " ")}},
	}})
	root := env.putDirectory(&remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{
		{Name: "recipe-sysroot", Digest: sysroot.GetProto()},
	}})
	materialize := func() time.Duration {
		start := time.Now()
		r, err := env.m.Materialize(context.Background(), digest.EmptyInstanceName, root)
		if err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		if len(r.Mounts) != 2 || len(r.Mounts[1].Layers) != layers {
			b.Fatalf("mounts %+v", r.Mounts)
		}
		r.Release()
		return elapsed
	}
	cold := materialize()
	b.ResetTimer()
	var warm time.Duration
	for i := 0; i < b.N; i++ {
		warm += materialize()
	}
	b.StopTimer()
	warm /= time.Duration(b.N)
	baseline := cpBaseline(b, "-al", merged, 3)
	b.ReportMetric(float64(cold.Microseconds())/1000, "cold_ms")
	b.ReportMetric(float64(warm.Nanoseconds())/1e6, "warm_ms")
	b.ReportMetric(float64(baseline.Microseconds())/1000, "cp-al_ms")
	b.ReportMetric(float64(baseline)/float64(warm), "cp-al/warm")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMaterialize10kAfterRestart: what verifying a previous run's
// caches costs on first use. Each iteration restarts the caches on the
// same directories (every file hashed, the layer checked with a stat
// per entry) and places the tree; the baseline, interleaved, places it
// with a fresh Materializer on caches already verified in this run
// (the plan recomputed from the CAS either way).
func BenchmarkMaterialize10kAfterRestart(b *testing.B) {
	bt := tree10k(b)
	e := bt.env
	e.resetCaches(b, true)
	bt.materialize(b).Release()
	var restarted, verified time.Duration
	corrupt, misses := counterValue(fileCacheCorrupt), counterValue(fileCacheMisses)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e.files.Close()
		e.layers.Close()
		unix.Close(e.files.dirFd)
		var err error
		if e.files, err = newFileCache(filepath.Join(e.dir, "files"), 8<<30, 1<<22, sysLinkat); err != nil {
			b.Fatal(err)
		}
		if e.layers, err = newLayerCache(filepath.Join(e.dir, "layers"), 8<<30, 1<<24); err != nil {
			b.Fatal(err)
		}
		e.m = NewMaterializer(e.storage, e.files, e.layers, MaterializerOptions{})
		b.StartTimer()
		start := time.Now()
		bt.materialize(b).Release()
		restarted += time.Since(start)
		b.StopTimer()
		e.m = NewMaterializer(e.storage, e.files, e.layers, MaterializerOptions{})
		start = time.Now()
		bt.materialize(b).Release()
		verified += time.Since(start)
		b.StartTimer()
	}
	b.StopTimer()
	if n := counterValue(fileCacheCorrupt) - corrupt; n != 0 {
		b.Fatalf("%v intact files found corrupt", n)
	}
	if n := counterValue(fileCacheMisses) - misses; n != 0 {
		b.Fatalf("%v files fetched again", n)
	}
	b.ReportMetric(float64(restarted.Nanoseconds())/float64(b.N)/1e6, "restart_ms")
	b.ReportMetric(float64(verified.Nanoseconds())/float64(b.N)/1e6, "verified_ms")
	b.ReportMetric(float64(restarted)/float64(verified), "x_verified")
}
