package layers

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/storage"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

// Cache directories are searchable by every uid: the sandbox may map
// an action to an unprivileged uid that must reach the layers.
const cacheDirMode = 0o755

// mkdirCacheDir creates dir (and parents) and makes sure it is at
// least 0711 even when the umask is strict.
func mkdirCacheDir(dir string) error {
	if err := os.MkdirAll(dir, cacheDirMode); err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to create cache directory")
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to stat cache directory")
	}
	if st.Mode&0o711 != 0o711 {
		if err := unix.Chmod(dir, uint32(st.Mode&0o7777)|0o711); err != nil {
			return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to make cache directory searchable")
		}
	}
	return nil
}

// openCacheState guards a cache directory against data lost in a
// power failure. Cache files are not fsynced one by one (that would
// cost more than fetching them); instead the boot ID under which the
// cache was last written is recorded, and Close syncs the file system
// and marks the state clean. A cache found written under another boot
// without a clean mark is wiped: its files may have lost their data.
// A mere process crash keeps the boot ID and the page cache, so the
// cache survives it.
func openCacheState(dir string) (wiped bool, err error) {
	bootID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		// Without a boot ID, trust nothing that was left behind.
		bootID = nil
	}
	bootID = bytes.TrimSpace(bootID)
	statePath := filepath.Join(dir, "boot_id")
	cleanPath := filepath.Join(dir, "clean")
	recorded, readErr := os.ReadFile(statePath)
	_, cleanErr := os.Stat(cleanPath)
	if bootID == nil || (readErr == nil && !bytes.Equal(recorded, bootID) && cleanErr != nil) {
		if err := wipeDirectoryContents(dir); err != nil {
			return false, err
		}
		wiped = true
	}
	// From now on the cache is being written again.
	if err := os.Remove(cleanPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to remove clean marker")
	}
	if err := os.WriteFile(statePath, bootID, 0o644); err != nil {
		return false, storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to record boot ID")
	}
	return wiped, nil
}

// closeCacheState syncs the file system holding dir and marks the
// cache clean, so the next boot may keep it.
func closeCacheState(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to open cache directory")
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to sync cache file system")
	}
	if err := os.WriteFile(filepath.Join(dir, "clean"), nil, 0o644); err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to write clean marker")
	}
	return unix.Fsync(fd)
}

func wipeDirectoryContents(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to list cache directory")
	}
	for _, e := range entries {
		if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// removeTree is fsutil.RemoveAll with the error as a status.
func removeTree(p string) error {
	if err := fsutil.RemoveAll(p); err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to remove cache entry")
	}
	return nil
}
