package layers

import (
	"context"
	"io"
	"log"
	"os"

	"github.com/bitzel/bitzel-worker/internal/parallel"
	"golang.org/x/sys/unix"
)

// Files a previous run left in the file cache are indexed at start-up
// by name, size and mode only, which is no evidence of their content:
// bit rot, a crash mid-write or a change by hand would be served under
// the original digest and end up in outputs and the Action Cache. So a
// file is hashed on its first use in this run, outside the start-up
// path and only for what is used; others asking for it meanwhile wait
// for the result. A file whose content does not match is dropped,
// logged and fetched again. fs-verity would make this free on file
// systems that have it, but the worker cannot count on it (ext4 needs
// the verity feature set at mkfs or tune2fs time, tmpfs lacks it).

// verificationConcurrency is how many files are hashed at once: hashing
// is CPU-bound, and other actions want the cores too.
const verificationConcurrency = 2

// verify hashes the given entries (each marked as being fetched by the
// caller, pinned once) and returns those whose content is wrong, which
// are then unindexed with their file removed, still marked as being
// fetched, for the caller to fetch. The others are marked verified.
func (fc *fileCache) verify(ctx context.Context, keys []FileKey) []FileKey {
	if len(keys) == 0 {
		return nil
	}
	intact := make([]bool, len(keys))
	// Not cancelled with the action: every entry must end verified
	// or dropped, and one file's hash is bounded by its size.
	parallel.Run(context.Background(), verificationConcurrency, len(keys), func(_ context.Context, i int) error {
		intact[i] = fc.contentMatches(keys[i])
		return nil
	})
	var corrupt []FileKey
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for i, k := range keys {
		e := fc.entries[k]
		if intact[i] {
			e.verified = true
			close(e.fetching)
			e.fetching = nil
			fc.lru.get(k)
			fileCacheHits.Inc()
			continue
		}
		// Removing the name leaves the bad inode to the layers of
		// a previous run that link it; the layer cache does not
		// serve those either.
		log.Printf("file cache: dropped %s: its content does not match its digest; fetching it again", fileName(k))
		unix.Unlinkat(fc.dirFd, fileName(k), 0)
		fc.lru.remove(k)
		fc.usedBytes -= e.size
		e.size = 0
		fileCacheCorrupt.Inc()
		corrupt = append(corrupt, k)
	}
	return corrupt
}

// contentMatches reports whether the cache file for k holds exactly
// the bytes of k's digest. Any error reading it counts as a mismatch.
func (fc *fileCache) contentMatches(k FileKey) bool {
	fd, err := unix.Openat(fc.dirFd, fileName(k), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), fileName(k))
	defer f.Close()
	generator := k.Digest.GetDigestFunction().NewGenerator(k.Digest.GetSizeBytes())
	// One byte more than expected, so that a grown file shows.
	n, err := io.Copy(generator, io.LimitReader(f, k.Digest.GetSizeBytes()+1))
	return err == nil && n == k.Digest.GetSizeBytes() && generator.Sum() == k.Digest
}
