package layers

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/bitzel/bitzel-worker/internal/parallel"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FileCache keeps one read-only inode per FileKey on local disk (mode
// 0444, or 0555 when executable), so that layers are built with
// hardlinks instead of copies. It is bounded by bytes and by file
// count and evicts the least recently used files that no layer build
// holds.
type FileCache interface {
	// Acquire makes every key present, fetching absent ones from
	// storage (verified against their digests), and pins them until
	// the returned set is released. Digests that storage does not
	// have are returned, not treated as an error; the set then pins
	// everything else.
	Acquire(ctx context.Context, store *storage.Storage, keys []FileKey) (*FileSet, []digest.Digest, error)
	// Close marks the cache clean after syncing it to disk.
	Close() error
}

type fileCacheEntry struct {
	size     int64
	pins     int
	fetching chan struct{} // closed when a fetch or verification ends; nil when present
	failed   bool          // the fetch ended without a file
	// verified is set once the file's content was checked against
	// its digest in this run: while it was written, or on first use
	// of a file a previous run left. Until then it is never served.
	verified bool
}

// Owner is who cached files and layer directories belong to. A worker
// running as root gives them to the uid its actions' root maps to:
// inside the user namespace a file whose owner is not mapped cannot be
// copied up for writing, even by root, so an action could not modify
// its inputs in its own upper directory. Ownership gives no access to
// the cached inodes themselves, which actions only see through the
// overlay. nil leaves files to the worker's own uid.
type Owner struct {
	UID, GID int
}

type fileCache struct {
	dir   string
	owner *Owner
	dirFd int
	link  linkFunc
	// createTemp is createTempFile but in tests.
	createTemp createTempFunc
	maxBytes   int64
	maxFiles   int
	tmpSeq     atomic.Uint64

	mu        sync.Mutex
	entries   map[FileKey]*fileCacheEntry
	lru       *lruIndex[FileKey, struct{}] // present, unpinned-or-pinned files
	usedBytes int64
}

// NewFileCache opens (creating when needed) a file cache under dir,
// reusing files left by a previous run.
func NewFileCache(dir string, maxBytes int64, maxFiles int, owner *Owner) (FileCache, error) {
	fc, err := newFileCache(dir, maxBytes, maxFiles, sysLinkat)
	if err != nil {
		return nil, err
	}
	fc.owner = owner
	return fc, nil
}

func newFileCache(dir string, maxBytes int64, maxFiles int, link linkFunc) (*fileCache, error) {
	registerMetrics()
	if err := mkdirCacheDir(dir); err != nil {
		return nil, err
	}
	if _, err := openCacheState(dir); err != nil {
		return nil, util.StatusWrap(err, "File cache")
	}
	for _, sub := range []string{"tmp", "files"} {
		if err := mkdirCacheDir(filepath.Join(dir, sub)); err != nil {
			return nil, err
		}
	}
	// Leftovers of writes interrupted by a crash.
	if err := wipeDirectoryContents(filepath.Join(dir, "tmp")); err != nil {
		return nil, err
	}
	fd, err := unix.Open(filepath.Join(dir, "files"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to open file cache directory")
	}
	fc := &fileCache{
		dir:        dir,
		dirFd:      fd,
		link:       link,
		createTemp: createTempFile,
		maxBytes:   maxBytes,
		maxFiles:   maxFiles,
		entries:    map[FileKey]*fileCacheEntry{},
		lru:        newLRUIndex[FileKey, struct{}](),
	}
	if err := fc.reload(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	fc.mu.Lock()
	fc.evictLocked()
	fc.mu.Unlock()
	return fc, nil
}

func (fc *fileCache) Close() error {
	return closeCacheState(fc.dir)
}

// evictLocked removes least recently used unpinned files until the
// cache is within budget. Layers holding hardlinks keep their inodes
// alive; only the cache's own name goes.
func (fc *fileCache) evictLocked() {
	fc.lru.oldestFirst(func(k FileKey, _ struct{}) bool {
		if fc.usedBytes <= fc.maxBytes && fc.lru.len() <= fc.maxFiles {
			return false
		}
		e := fc.entries[k]
		if e.pins > 0 {
			return true
		}
		unix.Unlinkat(fc.dirFd, fileName(k), 0)
		fc.lru.remove(k)
		delete(fc.entries, k)
		fc.usedBytes -= e.size
		return true
	})
}

func (fc *fileCache) Acquire(ctx context.Context, store *storage.Storage, keys []FileKey) (*FileSet, []digest.Digest, error) {
	set := &FileSet{cache: fc, pinned: make(map[FileKey]struct{}, len(keys))}
	fc.mu.Lock()
	toFetch, toVerify, waits := fc.pinLocked(set, keys)
	fc.mu.Unlock()

	// Corrupt files are dropped and fetched again with the absent ones.
	toFetch = append(toFetch, fc.verify(ctx, toVerify)...)
	missing, err := fc.fetch(ctx, store, toFetch)
	fc.endFetches(set, toFetch)
	if err != nil {
		set.Release()
		return nil, nil, err
	}
	more, err := fc.awaitOthers(ctx, store, set, waits)
	if err != nil {
		set.Release()
		return nil, nil, err
	}
	return set, append(missing, more...), nil
}

// fetchWait is a file another Acquire is fetching or verifying.
type fetchWait struct {
	key FileKey
	ch  chan struct{}
}

// pinLocked pins in set the keys the cache holds verified, and sorts
// the others: absent ones to fetch, ones a previous run left to verify
// (both pinned too, and waited for by others as fetches), and ones
// another Acquire is fetching, to wait for.
func (fc *fileCache) pinLocked(set *FileSet, keys []FileKey) (toFetch, toVerify []FileKey, waits []fetchWait) {
	for _, k := range keys {
		if _, ok := set.pinned[k]; ok {
			continue
		}
		e, ok := fc.entries[k]
		switch {
		case !ok:
			fc.entries[k] = &fileCacheEntry{fetching: make(chan struct{}), pins: 1}
			toFetch = append(toFetch, k)
			fileCacheMisses.Inc()
		case e.fetching != nil:
			waits = append(waits, fetchWait{k, e.fetching})
			continue
		case !e.verified:
			// Left by a previous run: hashed before first use,
			// while others asking for it wait as for a fetch.
			e.fetching = make(chan struct{})
			e.pins++
			toVerify = append(toVerify, k)
		default:
			e.pins++
			fc.lru.get(k)
			fileCacheHits.Inc()
		}
		set.pinned[k] = struct{}{}
	}
	return toFetch, toVerify, waits
}

// endFetches ends the fetches of keys, waking those waiting for them: a
// file fetched is counted and may be evicted from now on; one whose
// fetch failed or found nothing is forgotten and no longer pinned.
func (fc *fileCache) endFetches(set *FileSet, keys []FileKey) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for _, k := range keys {
		e := fc.entries[k]
		close(e.fetching)
		e.fetching = nil
		if e.failed {
			delete(fc.entries, k)
			delete(set.pinned, k)
			continue
		}
		fc.lru.put(k, struct{}{})
		fc.usedBytes += e.size
	}
	fc.evictLocked()
}

// awaitOthers waits for the files other Acquires were fetching, then
// pins them in set (or fetches them itself, when those fetches failed),
// and returns the digests found missing on the way.
func (fc *fileCache) awaitOthers(ctx context.Context, store *storage.Storage, set *FileSet, waits []fetchWait) ([]digest.Digest, error) {
	var missing []digest.Digest
	for _, w := range waits {
		select {
		case <-w.ch:
		case <-ctx.Done():
			return nil, util.StatusFromContext(ctx)
		}
		sub, m, err := fc.Acquire(ctx, store, []FileKey{w.key})
		if err != nil {
			return nil, err
		}
		missing = append(missing, m...)
		for k := range sub.pinned {
			if _, ok := set.pinned[k]; ok {
				fc.unpin(k)
			} else {
				set.pinned[k] = struct{}{}
			}
		}
	}
	return missing, nil
}

func (fc *fileCache) unpin(k FileKey) {
	fc.mu.Lock()
	if e, ok := fc.entries[k]; ok {
		e.pins--
	}
	fc.evictLocked()
	fc.mu.Unlock()
}

// fetch writes the given keys into the cache. Each key's entry gets
// its size on success and failed=true otherwise. Content is verified
// against the digest while it is written (bb-storage buffers check
// it), and a file is only renamed into place once complete.
func (fc *fileCache) fetch(ctx context.Context, store *storage.Storage, keys []FileKey) ([]digest.Digest, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	// One read per digest even when both modes are wanted.
	byDigest := map[digest.Digest][]FileKey{}
	var digests []digest.Digest
	for _, k := range keys {
		if _, ok := byDigest[k.Digest]; !ok {
			digests = append(digests, k.Digest)
		}
		byDigest[k.Digest] = append(byDigest[k.Digest], k)
	}
	markFailed := func(d digest.Digest) {
		fc.mu.Lock()
		for _, k := range byDigest[d] {
			fc.entries[k].failed = true
		}
		fc.mu.Unlock()
	}
	setSize := func(k FileKey) {
		fc.mu.Lock()
		fc.entries[k].size = k.Digest.GetSizeBytes()
		fc.entries[k].verified = true
		fc.mu.Unlock()
	}

	small, large := store.PartitionBySize(digests)
	var mu sync.Mutex
	var missing []digest.Digest
	err := parallel.Run(ctx, 4, len(small)+len(large), func(ctx context.Context, i int) error {
		if i < len(small) {
			m, err := store.ReadSmallBlobs(ctx, small[i], func(d digest.Digest, data []byte) error {
				for _, k := range byDigest[d] {
					if err := fc.writeFile(k, func(f *os.File) error {
						_, err := f.Write(data)
						return err
					}); err != nil {
						return err
					}
					setSize(k)
				}
				return nil
			})
			for _, d := range m {
				markFailed(d)
			}
			mu.Lock()
			missing = append(missing, m...)
			mu.Unlock()
			return err
		}
		d := large[i-len(small)]
		ks := byDigest[d]
		err := fc.writeFile(ks[0], func(f *os.File) error {
			return store.ReadBlobInto(ctx, d, f)
		})
		if status.Code(err) == codes.NotFound {
			markFailed(d)
			mu.Lock()
			missing = append(missing, d)
			mu.Unlock()
			return nil
		} else if err != nil {
			return util.StatusWrapf(err, "Failed to fetch blob %s", d)
		}
		setSize(ks[0])
		for _, k := range ks[1:] {
			if err := fc.copyFrom(ks[0], k); err != nil {
				return err
			}
			setSize(k)
		}
		return nil
	})
	if err != nil {
		for _, d := range digests {
			markFailed(d)
		}
		return nil, err
	}
	return missing, nil
}
