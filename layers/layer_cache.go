package layers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// LayerCache maps a layer key (the digest of the Directory message
// describing exactly what a layer holds) to a read-only directory on
// local disk. A layer is built once even when many actions ask for it
// at the same time, is built under tmp/ and published by an atomic
// rename (so a crash never leaves a partial layer where it would be
// served), and is only evicted, least recently used first, when no
// action holds a lease on it.
//
// On disk: layers/<name>/meta describes a published layer and
// layers/<name>/t is its tree, the directory to use as a lowerdir.
type LayerCache interface {
	// Acquire leases the layer if it is published.
	Acquire(key digest.Digest) (LayerLease, bool)
	// GetOrBuild leases the layer, building it with build when it
	// is absent. Concurrent callers for one key share one build.
	GetOrBuild(ctx context.Context, key digest.Digest, build LayerBuildFunc) (LayerLease, error)
	// GetOrBuildChecked is GetOrBuild that also serves a layer a
	// previous run left, once check accepts it; a layer check
	// refuses is dropped and built again. GetOrBuild rebuilds them.
	GetOrBuildChecked(ctx context.Context, key digest.Digest, build LayerBuildFunc, check LayerCheckFunc) (LayerLease, error)
	// Close marks the cache clean after syncing it to disk.
	Close() error
}

// LayerBuildFunc creates the layer's tree at dir, which does not exist
// yet, and reports its size.
type LayerBuildFunc func(ctx context.Context, dir string) (LayerStats, error)

// LayerCheckFunc reports whether the tree at dir, a layer a previous
// run left, is exactly the layer wanted.
type LayerCheckFunc func(dir string) bool

// LayerStats is what a layer costs against the cache's budget.
type LayerStats struct {
	Bytes  int64 // file contents, counted per name (hardlinks share them on disk)
	Inodes int64 // directories, files and symlinks
}

// LayerLease keeps a layer from being evicted while an action uses it.
type LayerLease interface {
	// Path is the layer's tree, suitable as an overlay lowerdir.
	Path() string
	// Release drops the lease. It is idempotent.
	Release()
}

type layerEntry struct {
	name     string
	stats    LayerStats
	refs     int
	building chan struct{} // closed when the build or check ends; nil once published
	buildErr error
	// verified is false for a layer a previous run left until a
	// check accepted it: its files may have changed on disk since,
	// so it is not served before.
	verified bool
}

type layerCache struct {
	removals  sync.WaitGroup
	dir       string
	maxBytes  int64
	maxInodes int64
	tmpSeq    atomic.Uint64

	mu         sync.Mutex
	entries    map[string]*layerEntry
	lru        *lruIndex[string, *layerEntry] // published layers
	usedBytes  int64
	usedInodes int64
}

const layerMetaHeader = "bitzel-layer 1"

// NewLayerCache opens (creating when needed) a layer cache under dir.
// Published layers of a previous run are kept; half-built ones and
// layers whose metadata is unreadable are removed.
func NewLayerCache(dir string, maxBytes, maxInodes int64) (LayerCache, error) {
	return newLayerCache(dir, maxBytes, maxInodes)
}

func newLayerCache(dir string, maxBytes, maxInodes int64) (*layerCache, error) {
	registerMetrics()
	if err := mkdirCacheDir(dir); err != nil {
		return nil, err
	}
	if _, err := openCacheState(dir); err != nil {
		return nil, util.StatusWrap(err, "Layer cache")
	}
	for _, sub := range []string{"tmp", "layers"} {
		if err := mkdirCacheDir(filepath.Join(dir, sub)); err != nil {
			return nil, err
		}
	}
	if err := wipeDirectoryContents(filepath.Join(dir, "tmp")); err != nil {
		return nil, err
	}
	lc := &layerCache{
		dir:       dir,
		maxBytes:  maxBytes,
		maxInodes: maxInodes,
		entries:   map[string]*layerEntry{},
		lru:       newLRUIndex[string, *layerEntry](),
	}
	if err := lc.reload(); err != nil {
		return nil, err
	}
	lc.mu.Lock()
	victims := lc.evictLocked()
	lc.mu.Unlock()
	lc.remove(victims)
	return lc, nil
}

func layerName(key digest.Digest) string {
	return fmt.Sprintf("%s-%d-%d", key.GetHashString(), key.GetSizeBytes(), key.GetDigestFunction().GetEnumValue())
}

func (lc *layerCache) layerPath(name string) string {
	return filepath.Join(lc.dir, "layers", name)
}

func (lc *layerCache) reload() error {
	names, err := os.ReadDir(filepath.Join(lc.dir, "layers"))
	if err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to list layer cache")
	}
	type found struct {
		name  string
		stats LayerStats
		mtime int64
	}
	var layers []found
	for _, n := range names {
		p := lc.layerPath(n.Name())
		stats, ok := readLayerMeta(p)
		info, err := os.Lstat(filepath.Join(p, "t"))
		if !ok || err != nil || !info.IsDir() {
			// Never serve what we cannot vouch for.
			if err := removeTree(p); err != nil {
				return err
			}
			continue
		}
		layers = append(layers, found{n.Name(), stats, info.ModTime().UnixNano()})
	}
	// Oldest first, so that the most recently built end up in front.
	sort.Slice(layers, func(i, j int) bool { return layers[i].mtime < layers[j].mtime })
	for _, l := range layers {
		e := &layerEntry{name: l.name, stats: l.stats}
		lc.entries[l.name] = e
		lc.lru.put(l.name, e)
		lc.usedBytes += l.stats.Bytes
		lc.usedInodes += l.stats.Inodes
	}
	layerCacheBytes.Set(float64(lc.usedBytes))
	return nil
}

func readLayerMeta(p string) (LayerStats, bool) {
	data, err := os.ReadFile(filepath.Join(p, "meta"))
	if err != nil {
		return LayerStats{}, false
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || lines[0] != layerMetaHeader {
		return LayerStats{}, false
	}
	fields := strings.Fields(lines[1])
	if len(fields) != 2 {
		return LayerStats{}, false
	}
	b, err1 := strconv.ParseInt(fields[0], 10, 64)
	i, err2 := strconv.ParseInt(fields[1], 10, 64)
	if err1 != nil || err2 != nil {
		return LayerStats{}, false
	}
	return LayerStats{Bytes: b, Inodes: i}, true
}

func (lc *layerCache) Close() error {
	lc.removals.Wait()
	return closeCacheState(lc.dir)
}

type layerLease struct {
	cache    *layerCache
	entry    *layerEntry
	path     string
	released atomic.Bool
}

func (l *layerLease) Path() string { return l.path }

func (l *layerLease) Release() {
	if l.released.Swap(true) {
		return
	}
	lc := l.cache
	lc.mu.Lock()
	l.entry.refs--
	victims := lc.evictLocked()
	lc.mu.Unlock()
	lc.remove(victims)
}

func (lc *layerCache) newLeaseLocked(e *layerEntry) *layerLease {
	e.refs++
	lc.lru.get(e.name)
	return &layerLease{cache: lc, entry: e, path: filepath.Join(lc.layerPath(e.name), "t")}
}

func (lc *layerCache) Acquire(key digest.Digest) (LayerLease, bool) {
	name := layerName(key)
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if e, ok := lc.entries[name]; ok && e.building == nil && e.verified {
		layerCacheHits.Inc()
		return lc.newLeaseLocked(e), true
	}
	return nil, false
}

func (lc *layerCache) GetOrBuild(ctx context.Context, key digest.Digest, build LayerBuildFunc) (LayerLease, error) {
	return lc.GetOrBuildChecked(ctx, key, build, nil)
}

func (lc *layerCache) GetOrBuildChecked(ctx context.Context, key digest.Digest, build LayerBuildFunc, check LayerCheckFunc) (LayerLease, error) {
	name := layerName(key)
	for {
		lc.mu.Lock()
		e, ok := lc.entries[name]
		if !ok {
			break // with the lock held: this caller builds
		}
		if e.building == nil && !e.verified {
			if lease, ok := lc.checkLocked(e, check); ok {
				return lease, nil
			}
			continue // dropped: build it
		}
		if e.building == nil {
			layerCacheHits.Inc()
			lease := lc.newLeaseLocked(e)
			lc.mu.Unlock()
			return lease, nil
		}
		ch := e.building
		lc.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, util.StatusFromContext(ctx)
		}
		if e.buildErr != nil && ctx.Err() == nil && status.Code(e.buildErr) != codes.Canceled && status.Code(e.buildErr) != codes.DeadlineExceeded {
			return nil, e.buildErr
		}
		// The builder gave up (e.g. its action was cancelled):
		// try again, possibly building ourselves.
	}
	layerCacheMisses.Inc()
	e := &layerEntry{name: name, building: make(chan struct{})}
	lc.entries[name] = e
	lc.mu.Unlock()

	stats, err := lc.build(ctx, name, build)

	lc.mu.Lock()
	if err != nil {
		// Waiters read buildErr after the channel closes.
		defer close(e.building)
		e.buildErr = err
		delete(lc.entries, name)
		lc.mu.Unlock()
		return nil, err
	}
	e.stats = stats
	e.verified = true
	lc.lru.put(name, e)
	lc.usedBytes += stats.Bytes
	lc.usedInodes += stats.Inodes
	lease := lc.newLeaseLocked(e)
	ch := e.building
	e.building = nil
	defer close(ch)
	victims := lc.evictLocked()
	layerCacheBytes.Set(float64(lc.usedBytes))
	lc.mu.Unlock()
	lc.remove(victims)
	return lease, nil
}

// build runs the build function in a private temporary directory and
// publishes the result with one rename. Before the rename the layer
// is invisible; after it, it is complete.
func (lc *layerCache) build(ctx context.Context, name string, build LayerBuildFunc) (LayerStats, error) {
	tmp := filepath.Join(lc.dir, "tmp", strconv.FormatUint(lc.tmpSeq.Add(1), 10))
	if err := mkdirCacheDir(tmp); err != nil {
		return LayerStats{}, err
	}
	stats, err := build(ctx, filepath.Join(tmp, "t"))
	if err == nil {
		meta := fmt.Sprintf("%s\n%d %d\n", layerMetaHeader, stats.Bytes, stats.Inodes)
		if err = os.WriteFile(filepath.Join(tmp, "meta"), []byte(meta), 0o444); err != nil {
			err = storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to write layer metadata")
		}
	}
	if err == nil {
		if err = os.Rename(tmp, lc.layerPath(name)); err != nil {
			err = storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to publish layer")
		}
	}
	if err != nil {
		removeTree(tmp)
		return LayerStats{}, err
	}
	return stats, nil
}

// evictLocked unpublishes least recently used unleased layers while
// over budget and returns them for removal outside the lock.
func (lc *layerCache) evictLocked() []string {
	var victims []string
	lc.lru.oldestFirst(func(name string, e *layerEntry) bool {
		if lc.usedBytes <= lc.maxBytes && lc.usedInodes <= lc.maxInodes {
			return false
		}
		if e.refs > 0 {
			return true
		}
		layerCacheEvictions.Inc()
		if trash, ok := lc.unpublishLocked(e); ok {
			victims = append(victims, trash)
		}
		return true
	})
	layerCacheBytes.Set(float64(lc.usedBytes))
	return victims
}

// unpublishLocked takes an unleased layer out of the cache and
// returns where its tree went, for removal outside the lock.
func (lc *layerCache) unpublishLocked(e *layerEntry) (string, bool) {
	lc.lru.remove(e.name)
	delete(lc.entries, e.name)
	lc.usedBytes -= e.stats.Bytes
	lc.usedInodes -= e.stats.Inodes
	// Renaming under the lock makes the name free at once, so a
	// rebuild of the same key cannot collide with removal.
	trash := filepath.Join(lc.dir, "tmp", "evicted-"+strconv.FormatUint(lc.tmpSeq.Add(1), 10))
	return trash, os.Rename(lc.layerPath(e.name), trash) == nil
}

// remove deletes evicted layers in the background: they are already
// unpublished (renamed into tmp/), and deleting a large tree must not
// delay the action whose lease release triggered it. Whatever a crash
// leaves in tmp/ is removed at start-up.
func (lc *layerCache) remove(victims []string) {
	if len(victims) == 0 {
		return
	}
	lc.removals.Add(1)
	go func() {
		defer lc.removals.Done()
		for _, v := range victims {
			removeTree(v)
		}
	}()
}
