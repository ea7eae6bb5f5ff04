package execroot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"golang.org/x/sys/unix"
)

// maximumSpareDirectories bounds the emptied action directories kept
// for reuse: about as many as actions run at once is enough.
const maximumSpareDirectories = 16

// Pool hands each action a directory with an upper and a work
// directory per overlay mount (and room for logs that outgrow memory),
// and takes it back afterwards for the next action. ExecRoot is the
// only user of its directories.
//
// Creating and removing directories is what the build directory's file
// system does worst under this churn: on a long-used ext4, mkdir
// searches the inode bitmaps past every recently deleted inode, and a
// worker deletes several per action. Profiled in cluster mode on such a
// disk, the three mkdirs of each action once took 6% of all CPU time
// and about 2 ms of its latency; interleaved runs of serve with and
// without reuse measured 4-9% less CPU per trivial action (the
// overlay's own work/work directory is still created at each mount).
// A directory is therefore emptied and reset
// rather than removed, and reused only once the sandbox that mounted it
// has been reaped (sandbox.Result.Released), so no two overlays ever
// share an upper or work directory. Whatever cannot be reset to what a
// fresh directory looks like is removed instead.
type Pool struct {
	root     string
	sequence atomic.Uint64

	mu    sync.Mutex
	spare []*directory
}

// directory is one action's directory: upper<i> and work<i> for
// i < pairs, and nothing else once reset.
type directory struct {
	path  string
	pairs int
}

func (a *directory) upper(i int) string {
	return filepath.Join(a.path, fmt.Sprintf("upper%d", i))
}

func (a *directory) work(i int) string {
	return filepath.Join(a.path, fmt.Sprintf("work%d", i))
}

func (a *directory) file(name string) string {
	return filepath.Join(a.path, name)
}

// NewPool hands out directories below root, which must exist and be
// the pool's alone.
func NewPool(root string) *Pool {
	return &Pool{root: root}
}

// FreeBytes returns the space left on the file system of the pool's
// directories, if it can be read.
func (d *Pool) FreeBytes() (int64, bool) {
	var fs unix.Statfs_t
	if err := unix.Statfs(d.root, &fs); err != nil {
		return 0, false
	}
	return int64(fs.Bavail) * int64(fs.Bsize), true
}

// get returns a directory with at least mounts upper/work pairs.
func (d *Pool) get(mounts int) (*directory, error) {
	d.mu.Lock()
	var a *directory
	if n := len(d.spare); n > 0 {
		a, d.spare = d.spare[n-1], d.spare[:n-1]
	}
	d.mu.Unlock()
	if a == nil {
		a = &directory{path: filepath.Join(d.root, fmt.Sprint(d.sequence.Add(1)))}
		if err := os.Mkdir(a.path, 0o711); err != nil {
			return nil, fmt.Errorf("create the action directory: %w", err)
		}
	}
	for ; a.pairs < mounts; a.pairs++ {
		for _, dir := range []string{a.upper(a.pairs), a.work(a.pairs)} {
			if err := os.Mkdir(dir, 0o755); err != nil {
				fsutil.RemoveAll(a.path)
				return nil, fmt.Errorf("create %s: %w", dir, err)
			}
		}
	}
	return a, nil
}

// put takes a directory back once nothing uses it any more.
func (d *Pool) put(a *directory) {
	if err := a.reset(); err == nil {
		d.mu.Lock()
		if len(d.spare) < maximumSpareDirectories {
			d.spare = append(d.spare, a)
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
	fsutil.RemoveAll(a.path)
}

// discard removes a directory that a sandbox may still use, or that
// is in an unknown state.
func (d *Pool) discard(a *directory) {
	fsutil.RemoveAll(a.path)
}

// reset empties the directory and undoes what the action could have
// changed on the roots of its upper directories: their mode, times,
// extended attributes and ACLs are those of the exec root (and its
// sub-path mounts) inside the sandbox, which the next action must see
// fresh. Their owner is handed to the next action's root by the
// sandbox runner anyway.
func (a *directory) reset() error {
	pairs := map[string]bool{}
	for i := 0; i < a.pairs; i++ {
		pairs[filepath.Base(a.upper(i))], pairs[filepath.Base(a.work(i))] = true, true
	}
	entries, err := os.ReadDir(a.path)
	if err != nil {
		return err
	}
	for _, entry := range entries {
		if !pairs[entry.Name()] {
			if err := fsutil.RemoveAll(a.file(entry.Name())); err != nil {
				return err
			}
		}
	}
	for i := 0; i < a.pairs; i++ {
		for _, dir := range []string{a.upper(i), a.work(i)} {
			if err := resetDirectory(dir); err != nil {
				return fmt.Errorf("reset %s: %w", dir, err)
			}
		}
	}
	return nil
}

// resetDirectory makes dir an empty 0755 directory without extended
// attributes (overlay's own, the action's user.* ones, POSIX ACLs).
func resetDirectory(dir string) error {
	// First the mode: the action may have left the root unreadable.
	if err := unix.Chmod(dir, 0o755); err != nil {
		return err
	}
	// os.ReadDir rather than os.Open: a directory opened with os.Open
	// is offered to the runtime's poller, which costs four fcntl and
	// an epoll_ctl that fails, twice per action.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, entry := range entries {
		if err := fsutil.RemoveAll(filepath.Join(dir, entry.Name())); err != nil {
			return err
		}
	}
	if err := removeExtendedAttributes(dir); err != nil {
		return err
	}
	now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dir, now, unix.AT_SYMLINK_NOFOLLOW)
}

func removeExtendedAttributes(path string) error {
	size, err := unix.Llistxattr(path, nil)
	if err != nil || size == 0 {
		return err
	}
	buffer := make([]byte, size)
	size, err = unix.Llistxattr(path, buffer)
	if err != nil {
		return err
	}
	for _, name := range strings.Split(strings.TrimRight(string(buffer[:size]), "\x00"), "\x00") {
		if err := unix.Lremovexattr(path, name); err != nil && err != unix.ENODATA {
			return fmt.Errorf("remove extended attribute %q: %w", name, err)
		}
	}
	return nil
}
