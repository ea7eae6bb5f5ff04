package layers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/internal/parallel"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FileKey names one cached inode: the same content is kept twice when
// it is needed both executable and not, because the mode belongs to
// the inode that every layer hardlinks.
type FileKey struct {
	Digest     digest.Digest
	Executable bool
	// UnixMode and MtimeNanos come from an input file's node
	// properties (unix_mode, mtime) when the client sets them; zero
	// means the defaults (0444/0555 and InputTimestamp). A BitBake
	// client sends the build tree's real timestamps, so that make in
	// a later task sees the same ages as a local build would.
	UnixMode   uint32
	MtimeNanos int64
}

// fileKeyOf is the cache key of an input file node.
func fileKeyOf(d digest.Digest, f *remoteexecution.FileNode) FileKey {
	k := FileKey{Digest: d, Executable: f.IsExecutable}
	if m := f.GetNodeProperties().GetUnixMode(); m != nil {
		// Permission bits only: a cached inode is never setuid.
		k.UnixMode = m.GetValue() & 0o777
	}
	if t := f.GetNodeProperties().GetMtime(); t != nil && t.IsValid() {
		k.MtimeNanos = t.AsTime().UnixNano()
	}
	return k
}

// mode is the permission of the cache file for k.
func (k FileKey) mode() os.FileMode {
	if k.UnixMode != 0 {
		return os.FileMode(k.UnixMode)
	}
	return fileMode(k.Executable)
}

// mtime is the modification time of the cache file for k.
func (k FileKey) mtime() time.Time {
	if k.MtimeNanos != 0 {
		return time.Unix(0, k.MtimeNanos)
	}
	return InputTimestamp
}

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
	Acquire(ctx context.Context, storage *storage.Storage, keys []FileKey) (*FileSet, []digest.Digest, error)
	// Close marks the cache clean after syncing it to disk.
	Close() error
}

// linkFunc is linkat(2) without flags; tests replace it to simulate a
// file system with a low hardlink limit.
type linkFunc func(oldDirFd int, oldPath string, newDirFd int, newPath string) error

func sysLinkat(oldDirFd int, oldPath string, newDirFd int, newPath string) error {
	return unix.Linkat(oldDirFd, oldPath, newDirFd, newPath, 0)
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

// InputTimestamp is the modification time of every cached file, and so
// of every input file an action sees: 2000-01-01T00:00:00Z, as
// Buildbarn sets. One inode serves many actions, so the time cannot be
// the input's own; a fixed one makes `make` and other mtime-driven
// tools behave the same on every run and every worker.
var InputTimestamp = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

type fileCache struct {
	dir      string
	owner    *Owner
	dirFd    int
	link     linkFunc
	maxBytes int64
	maxFiles int
	tmpSeq   atomic.Uint64

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
		return nil, util.StatusWrapWithCode(err, codes.Internal, "Failed to open file cache directory")
	}
	fc := &fileCache{
		dir:      dir,
		dirFd:    fd,
		link:     link,
		maxBytes: maxBytes,
		maxFiles: maxFiles,
		entries:  map[FileKey]*fileCacheEntry{},
		lru:      newLRUIndex[FileKey, struct{}](),
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

// fileName is "<shard>/<hash>-<size>-<function>[-x]". The digest
// function is part of the name because SHA-256 and BLAKE3 hashes have
// the same length. Instance names are not: content is content.
func fileName(k FileKey) string {
	h := k.Digest.GetHashString()
	name := fmt.Sprintf("%s/%s-%d-%d", h[:2], h, k.Digest.GetSizeBytes(), k.Digest.GetDigestFunction().GetEnumValue())
	if k.Executable {
		name += "-x"
	}
	if k.UnixMode != 0 {
		name += fmt.Sprintf("-m%o", k.UnixMode)
	}
	if k.MtimeNanos != 0 {
		name += fmt.Sprintf("-t%d", k.MtimeNanos)
	}
	return name
}

func parseFileName(shard, name string) (FileKey, bool) {
	parts := strings.Split(name, "-")
	if len(parts) < 3 {
		return FileKey{}, false
	}
	var k FileKey
	for _, option := range parts[3:] {
		switch {
		case option == "x" && !k.Executable:
			k.Executable = true
		case strings.HasPrefix(option, "m") && k.UnixMode == 0:
			m, err := strconv.ParseUint(option[1:], 8, 32)
			if err != nil || m == 0 || m > 0o777 {
				return FileKey{}, false
			}
			k.UnixMode = uint32(m)
		case strings.HasPrefix(option, "t") && k.MtimeNanos == 0:
			t, err := strconv.ParseInt(option[1:], 10, 64)
			if err != nil || t == 0 {
				return FileKey{}, false
			}
			k.MtimeNanos = t
		default:
			return FileKey{}, false
		}
	}
	size, err1 := strconv.ParseInt(parts[1], 10, 64)
	fn, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || !strings.HasPrefix(parts[0], shard) {
		return FileKey{}, false
	}
	function, err := digest.EmptyInstanceName.GetDigestFunction(remoteexecution.DigestFunction_Value(fn), len(parts[0]))
	if err != nil {
		return FileKey{}, false
	}
	d, err := function.NewDigest(parts[0], size)
	if err != nil {
		return FileKey{}, false
	}
	k.Digest = d
	if fileName(k) != shard+"/"+name {
		return FileKey{}, false
	}
	return k, true
}

// reload indexes the files a previous run left. Anything that does
// not look like a complete cache file (wrong name, size or mode) is
// removed rather than trusted.
func (fc *fileCache) reload() error {
	root := filepath.Join(fc.dir, "files")
	shards, err := os.ReadDir(root)
	if err != nil {
		return util.StatusWrapWithCode(err, codes.Internal, "Failed to list file cache")
	}
	for _, shard := range shards {
		shardPath := filepath.Join(root, shard.Name())
		names, err := os.ReadDir(shardPath)
		if err != nil {
			return util.StatusWrapWithCode(err, codes.Internal, "Failed to list file cache shard")
		}
		for _, n := range names {
			p := filepath.Join(shardPath, n.Name())
			k, ok := parseFileName(shard.Name(), n.Name())
			info, err := os.Lstat(p)
			if !ok || err != nil || !info.Mode().IsRegular() || info.Size() != k.Digest.GetSizeBytes() || info.Mode().Perm() != k.mode() {
				os.Remove(p)
				continue
			}
			fc.entries[k] = &fileCacheEntry{size: info.Size()}
			fc.lru.putOldest(k, struct{}{})
			fc.usedBytes += info.Size()
		}
	}
	return nil
}

func fileMode(executable bool) os.FileMode {
	if executable {
		return 0o555
	}
	return 0o444
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

func (fc *fileCache) Acquire(ctx context.Context, storage *storage.Storage, keys []FileKey) (*FileSet, []digest.Digest, error) {
	set := &FileSet{cache: fc, pinned: make(map[FileKey]struct{}, len(keys))}
	var toFetch []FileKey
	type wait struct {
		key FileKey
		ch  chan struct{}
	}
	var waits []wait
	var toVerify []FileKey
	fc.mu.Lock()
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
			waits = append(waits, wait{k, e.fetching})
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
	fc.mu.Unlock()

	// Corrupt files are dropped and fetched again with the absent ones.
	toFetch = append(toFetch, fc.verify(ctx, toVerify)...)
	missing, err := fc.fetch(ctx, storage, toFetch)
	// Keys whose fetch failed or found nothing are no longer pinned.
	fc.mu.Lock()
	for _, k := range toFetch {
		e := fc.entries[k]
		close(e.fetching)
		e.fetching = nil
		if e.failed {
			e.failed = true
			delete(fc.entries, k)
			delete(set.pinned, k)
			continue
		}
		fc.lru.put(k, struct{}{})
		fc.usedBytes += e.size
	}
	fc.evictLocked()
	fc.mu.Unlock()
	if err != nil {
		set.Release()
		return nil, nil, err
	}

	// Files other actions were fetching: wait, then pin or retry.
	for _, w := range waits {
		select {
		case <-w.ch:
		case <-ctx.Done():
			set.Release()
			return nil, nil, util.StatusFromContext(ctx)
		}
		sub, m, err := fc.Acquire(ctx, storage, []FileKey{w.key})
		if err != nil {
			set.Release()
			return nil, nil, err
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
	return set, missing, nil
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
func (fc *fileCache) fetch(ctx context.Context, storage *storage.Storage, keys []FileKey) ([]digest.Digest, error) {
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

	small, large := storage.PartitionBySize(digests)
	var mu sync.Mutex
	var missing []digest.Digest
	err := parallel.Run(ctx, 4, len(small)+len(large), func(ctx context.Context, i int) error {
		if i < len(small) {
			m, err := storage.ReadSmallBlobs(ctx, small[i], func(d digest.Digest, data []byte) error {
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
			return storage.ReadBlobInto(ctx, d, f)
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

// writeFile creates the cache file for k from what fill writes,
// atomically: a crash or an error leaves only a temporary file, which
// start-up removes.
func (fc *fileCache) writeFile(k FileKey, fill func(f *os.File) error) error {
	tmp := filepath.Join(fc.dir, "tmp", strconv.FormatUint(fc.tmpSeq.Add(1), 10))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return util.StatusWrapWithCode(err, codes.Internal, "Failed to create file in file cache")
	}
	err = fill(f)
	if err == nil {
		err = fc.finishFile(f, k)
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = fc.publish(tmp, k)
	}
	if err != nil {
		os.Remove(tmp)
		return util.StatusWrapf(err, "Failed to write %s to the file cache", k.Digest)
	}
	return nil
}

// finishFile gives a freshly written file its final mode, owner and
// timestamp.
func (fc *fileCache) finishFile(f *os.File, k FileKey) error {
	// Explicit chmod: the umask must not decide who can read.
	if err := f.Chmod(k.mode()); err != nil {
		return err
	}
	if fc.owner != nil {
		if err := f.Chown(fc.owner.UID, fc.owner.GID); err != nil {
			return err
		}
	}
	t := unix.NsecToTimeval(k.mtime().UnixNano())
	return unix.Futimes(int(f.Fd()), []unix.Timeval{t, t})
}

func (fc *fileCache) publish(tmp string, k FileKey) error {
	target := filepath.Join(fc.dir, "files", fileName(k))
	err := os.Rename(tmp, target)
	if errors.Is(err, os.ErrNotExist) {
		if err := mkdirCacheDir(filepath.Dir(target)); err != nil {
			return err
		}
		err = os.Rename(tmp, target)
	}
	return err
}

// copyFrom creates the cache file for k as a copy of the one for src
// (same content, other mode, or a fresh inode once src's link count is
// exhausted).
func (fc *fileCache) copyFrom(src, k FileKey) error {
	return fc.writeFile(k, func(f *os.File) error {
		return copyFileAt(fc.dirFd, fileName(src), f)
	})
}

func copyFileAt(dirFd int, name string, dst *os.File) error {
	fd, err := unix.Openat(dirFd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	src := os.NewFile(uintptr(fd), name)
	defer src.Close()
	// io.Copy between files uses copy_file_range: no user-space copy,
	// and a reflink where the file system supports it.
	_, err = dst.ReadFrom(src)
	return err
}

// FileSet is a set of cache files pinned for a layer build.
type FileSet struct {
	cache    *fileCache
	mu       sync.Mutex
	pinned   map[FileKey]struct{}
	released bool
}

// Release unpins the files. It is idempotent.
func (s *FileSet) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return
	}
	s.released = true
	fc := s.cache
	fc.mu.Lock()
	for k := range s.pinned {
		if e, ok := fc.entries[k]; ok {
			e.pins--
		}
	}
	fc.evictLocked()
	fc.mu.Unlock()
}

// Link places the cached file for k at name in the directory dirFd.
// When the cache inode has no hardlinks left (EMLINK), the cache gets
// a fresh inode and the link is retried; should that fail too, the
// file is copied. Running out of links is never an error.
func (s *FileSet) Link(k FileKey, dirFd int, name string) error {
	fc := s.cache
	err := fc.link(fc.dirFd, fileName(k), dirFd, name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EMLINK) {
		return util.StatusWrapfWithCode(err, codes.Internal, "Failed to link %s from the file cache", k.Digest)
	}
	// Later layers link the fresh inode; existing links keep the old.
	if err := fc.copyFrom(k, k); err != nil {
		return err
	}
	err = fc.link(fc.dirFd, fileName(k), dirFd, name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EMLINK) {
		return util.StatusWrapfWithCode(err, codes.Internal, "Failed to link %s from the file cache", k.Digest)
	}
	fd, err := unix.Openat(dirFd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return util.StatusWrapfWithCode(err, codes.Internal, "Failed to create copy of %s", k.Digest)
	}
	f := os.NewFile(uintptr(fd), name)
	err = copyFileAt(fc.dirFd, fileName(k), f)
	if err == nil {
		err = fc.finishFile(f, k)
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return util.StatusWrapfWithCode(err, codes.Internal, "Failed to copy %s", k.Digest)
	}
	return nil
}
