package layers

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/bitzel/bitzel-worker/storage"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

// Writing cache files (atomically, through tmp/) and placing them in
// layers (hardlinks, with copies once an inode's links run out).

// linkFunc is linkat(2) without flags; tests replace it to simulate a
// file system with a low hardlink limit.
type linkFunc func(oldDirFd int, oldPath string, newDirFd int, newPath string) error

// createTempFunc creates a file to write a cache file in; tests
// replace it to simulate a full disk.
type createTempFunc func(name string) (*os.File, error)

func createTempFile(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

func sysLinkat(oldDirFd int, oldPath string, newDirFd int, newPath string) error {
	return unix.Linkat(oldDirFd, oldPath, newDirFd, newPath, 0)
}

// writeFile creates the cache file for k from what fill writes,
// atomically: a crash or an error leaves only a temporary file, which
// start-up removes.
func (fc *fileCache) writeFile(k FileKey, fill func(f *os.File) error) error {
	tmp := filepath.Join(fc.dir, "tmp", strconv.FormatUint(fc.tmpSeq.Add(1), 10))
	f, err := fc.createTemp(tmp)
	if err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to create file in file cache")
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
		return storage.WrapFileSystemError(err, "Failed to write %s to the file cache", k.Digest)
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
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to link %s from the file cache", k.Digest)
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
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to link %s from the file cache", k.Digest)
	}
	fd, err := unix.Openat(dirFd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to create copy of %s", k.Digest)
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
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to copy %s", k.Digest)
	}
	return nil
}
