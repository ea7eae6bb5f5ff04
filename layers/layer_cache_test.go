package layers

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/buildbarn/bb-storage/pkg/digest"
)

func layerKey(i int) digest.Digest {
	return digestOf([]byte("layer " + strconv.Itoa(i)))
}

// buildFiles returns a build function writing n files of size bytes.
func buildFiles(n int, size int) LayerBuildFunc {
	return func(ctx context.Context, dir string) (LayerStats, error) {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return LayerStats{}, err
		}
		for i := 0; i < n; i++ {
			if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), make([]byte, size), 0o444); err != nil {
				return LayerStats{}, err
			}
		}
		return LayerStats{Bytes: int64(n * size), Inodes: int64(n + 1)}, nil
	}
}

func TestLayerCacheConcurrentGetOrBuildBuildsOnce(t *testing.T) {
	lc, err := newLayerCache(tempDir(t), 1<<30, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	const n = 32
	var mu sync.Mutex
	builds := 0
	entered := make(chan struct{})
	proceed := make(chan struct{})
	build := func(ctx context.Context, dir string) (LayerStats, error) {
		mu.Lock()
		builds++
		mu.Unlock()
		close(entered)
		<-proceed
		return buildFiles(3, 10)(ctx, dir)
	}
	var wg sync.WaitGroup
	paths := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			lease, err := lc.GetOrBuild(context.Background(), layerKey(1), build)
			if err != nil {
				t.Error(err)
				return
			}
			paths[i] = lease.Path()
			lease.Release()
		}(i)
	}
	// Hold the build until it has started; every other caller either
	// waits for it or arrives once it is published.
	<-entered
	close(proceed)
	wg.Wait()
	if builds != 1 {
		t.Fatalf("built %d times", builds)
	}
	for _, p := range paths {
		if p != paths[0] {
			t.Fatal("different paths for one layer")
		}
	}
}

func TestLayerCacheNeverEvictsLeasedLayer(t *testing.T) {
	// Budget: one layer of 100 bytes.
	lc, err := newLayerCache(tempDir(t), 150, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := lc.GetOrBuild(ctx, layerKey(1), buildFiles(10, 10))
	if err != nil {
		t.Fatal(err)
	}
	b, err := lc.GetOrBuild(ctx, layerKey(2), buildFiles(10, 10))
	if err != nil {
		t.Fatal(err)
	}
	// Both leased: over budget, but both must still be there.
	for _, l := range []LayerLease{a, b} {
		if n := len(readTree(t, l.Path())); n != 11 {
			t.Fatalf("leased layer %s damaged: %d entries", l.Path(), n)
		}
	}
	a.Release()
	a.Release() // idempotent: must not drop b's lease count or panic
	// a is unleased and least recently used: it goes.
	if _, err := os.Stat(a.Path()); !os.IsNotExist(err) {
		t.Fatalf("unleased layer not evicted: %v", err)
	}
	if _, ok := lc.Acquire(layerKey(1)); ok {
		t.Fatal("evicted layer still served")
	}
	if n := len(readTree(t, b.Path())); n != 11 {
		t.Fatal("leased layer damaged")
	}
	b.Release()
	// Within budget now: b stays for the next action.
	c, ok := lc.Acquire(layerKey(2))
	if !ok {
		t.Fatal("layer within budget evicted")
	}
	c.Release()
}

// TestLayerCacheCrashHelper is the body of a subprocess that starts a
// layer build and is killed in the middle of it.
func TestLayerCacheCrashHelper(t *testing.T) {
	dir := os.Getenv("BITZEL_CAS_CRASH_DIR")
	if dir == "" {
		return // only meaningful as a subprocess
	}
	lc, err := newLayerCache(dir, 1<<30, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	lc.GetOrBuild(context.Background(), layerKey(1), func(ctx context.Context, d string) (LayerStats, error) {
		buildFiles(5, 10)(ctx, d)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	})
}

func TestLayerCacheCrashLeavesNothingServed(t *testing.T) {
	dir := tempDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLayerCacheCrashHelper$")
	cmd.Env = append(os.Environ(), "BITZEL_CAS_CRASH_DIR="+dir)
	err := cmd.Run()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper was not killed mid-build: %v", err)
	}
	// The half-built layer is there, under tmp/.
	if entries, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(entries) == 0 {
		t.Fatal("helper left no half-built layer; test proves nothing")
	}
	// A layer directory without metadata, as a crash between rename
	// and anything else could not produce but a disk error might.
	bogus := filepath.Join(dir, "layers", layerName(layerKey(2)))
	if err := os.MkdirAll(filepath.Join(bogus, "t"), 0o755); err != nil {
		t.Fatal(err)
	}

	lc, err := newLayerCache(dir, 1<<30, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []digest.Digest{layerKey(1), layerKey(2)} {
		if _, ok := lc.Acquire(k); ok {
			t.Fatalf("layer %s served after crash", k)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(entries) != 0 {
		t.Fatalf("half-built layers kept: %v", entries)
	}
	if _, err := os.Stat(bogus); !os.IsNotExist(err) {
		t.Fatal("layer without metadata kept")
	}
	// Building again works and yields the complete layer.
	l, err := lc.GetOrBuild(context.Background(), layerKey(1), buildFiles(5, 10))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(readTree(t, l.Path())); n != 6 {
		t.Fatalf("rebuilt layer has %d entries", n)
	}
	l.Release()

	// Published layers survive a restart, and are served once checked.
	lc2, err := newLayerCache(dir, 1<<30, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := lc2.Acquire(layerKey(1)); ok {
		t.Fatal("layer of a previous run served unchecked")
	}
	l2 := mustKeepReloaded(t, lc2, layerKey(1))
	l2.Release()
}

// mustKeepReloaded leases a layer a previous run left, which a check
// accepts, and fails if it is built again instead.
func mustKeepReloaded(t *testing.T, lc *layerCache, key digest.Digest) LayerLease {
	t.Helper()
	checked := false
	l, err := lc.GetOrBuildChecked(context.Background(), key, func(context.Context, string) (LayerStats, error) {
		t.Fatal("published layer lost on restart")
		return LayerStats{}, nil
	}, func(string) bool { checked = true; return true })
	if err != nil {
		t.Fatal(err)
	}
	if !checked {
		t.Fatal("layer of a previous run served unchecked")
	}
	return l
}

func TestCacheWipedAfterUncleanReboot(t *testing.T) {
	dir := tempDir(t)
	lc, err := newLayerCache(dir, 1<<30, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	l, err := lc.GetOrBuild(context.Background(), layerKey(1), buildFiles(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	// Pretend the layer was written under another boot and never
	// synced: its data may be lost, so it must not be served.
	if err := os.WriteFile(filepath.Join(dir, "boot_id"), []byte("another-boot"), 0o644); err != nil {
		t.Fatal(err)
	}
	lc, err = newLayerCache(dir, 1<<30, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := lc.Acquire(layerKey(1)); ok {
		t.Fatal("unsynced layer from another boot served")
	}
	// After a clean close, another boot keeps it.
	l, _ = lc.GetOrBuild(context.Background(), layerKey(1), buildFiles(1, 1))
	l.Release()
	if err := lc.Close(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "boot_id"), []byte("another-boot"), 0o644)
	lc, err = newLayerCache(dir, 1<<30, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	mustKeepReloaded(t, lc, layerKey(1)).Release()
}
