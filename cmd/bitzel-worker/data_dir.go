package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bitzel/bitzel-worker/sandbox"
	"golang.org/x/sys/unix"
)

// defaultDataDir is where a zero-config worker keeps its CAS, caches
// and sandbox state: a system directory for root, the user's cache
// directory otherwise.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/bitzel-worker"
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "bitzel-worker")
	}
	return filepath.Join(os.TempDir(), "bitzel-worker-"+os.Getenv("USER"))
}

// dataDirLockName is the lock file in the data directory; it holds the
// pid of the process that has the directory.
const dataDirLockName = "lock"

// dataDirectory is a data directory this process holds exclusively.
// Two workers on one directory would reinitialise each other's storage
// and wipe each other's build directories, so nothing in it is touched
// before the lock is held.
type dataDirectory struct {
	path string
	lock *os.File
}

// openDataDirectory creates path when needed, takes its lock and
// closes it to every host user but this process's uid, root and, as
// root, the group of the sandboxes' mapped root (actionGID; -1
// rootless). That group must traverse the directory to mount the
// cached layers as the action's root, and needs nothing else: 0710.
// Modes of the files inside are the client's (an action must see its
// inputs' modes), so the directory is what keeps host users out of the
// caches, whatever they know of the names in it. A pre-existing
// directory with looser modes is tightened.
func openDataDirectory(path string, actionGID int) (*dataDirectory, error) {
	// Parents stay searchable: the actions' root must pass them (a
	// relative dataDirectoryPath puts several workers' directories
	// under the default one).
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	dirFd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open data directory: %w", err)
	}
	defer unix.Close(dirFd)
	var st unix.Stat_t
	if err := unix.Fstat(dirFd, &st); err != nil {
		return nil, fmt.Errorf("stat data directory: %w", err)
	}
	if int(st.Uid) != os.Geteuid() {
		// Its owner could change anything in it under us.
		return nil, fmt.Errorf("data directory %s belongs to uid %d, not to this process's uid %d", path, st.Uid, os.Geteuid())
	}
	lockFd, err := unix.Openat(dirFd, dataDirLockName, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open data directory lock: %w", err)
	}
	lock := os.NewFile(uintptr(lockFd), filepath.Join(path, dataDirLockName))
	if err := unix.Flock(lockFd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("data directory %s is in use by another worker (pid %s, the holder of %s); give each worker its own --data-dir", path, lockHolder(lock), lock.Name())
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	d := &dataDirectory{path: path, lock: lock}
	if err := d.restrict(dirFd, actionGID); err != nil {
		d.Close()
		return nil, err
	}
	// The pid is for the message a second instance prints; the lock
	// itself is the flock, released by the kernel when we exit.
	err = lock.Truncate(0)
	if err == nil {
		_, err = lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("write data directory lock: %w", err)
	}
	return d, nil
}

func (d *dataDirectory) restrict(dirFd, actionGID int) error {
	mode := uint32(0o700)
	if actionGID >= 0 {
		if err := unix.Fchown(dirFd, -1, actionGID); err != nil {
			return fmt.Errorf("give data directory to group %d: %w", actionGID, err)
		}
		mode = 0o710
	}
	// Fchmod also clears setgid and sticky bits of an older directory.
	if err := unix.Fchmod(dirFd, mode); err != nil {
		return fmt.Errorf("restrict data directory: %w", err)
	}
	return nil
}

// lockHolder is the pid recorded in the lock file, or "unknown".
func lockHolder(lock *os.File) string {
	buf := make([]byte, 32)
	n, _ := lock.ReadAt(buf, 0)
	if pid := strings.TrimSpace(string(buf[:n])); pid != "" {
		return pid
	}
	return "unknown"
}

// Close releases the lock; the next worker may take the directory.
func (d *dataDirectory) Close() error {
	return d.lock.Close()
}

// actionGroup is the gid that must traverse the data directory: the
// host gid of the actions' root as root, none (-1) rootless, where the
// actions' root is this process's own uid.
func (s *executorSettings) actionGroup() int {
	if os.Geteuid() != 0 {
		return -1
	}
	_, gid := sandbox.Config{HostIDBase: s.hostIDBase, HostIDCount: s.hostIDCount}.ActionRootIDs()
	return gid
}
