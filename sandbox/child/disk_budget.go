package child

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// An action's writes to its exec root land in the overlays' upper
// directories. With a disk budget, those live on a tmpfs of the
// budget's size that the action's thread mounts in the action's mount
// namespace (which it can, rootless as well as for a root worker): a write past the budget
// fails with ENOSPC as it happens, and other actions, the caches and
// the data directory's file system are untouched.
//
// The worker reads the outputs after the sandbox is gone, so the tmpfs
// must outlive the action's mount namespace: the thread sends a
// descriptor of its root to the worker over the control socket
// (SCM_RIGHTS) before the command starts, and detaches it from the tree
// (with the data roots) so that the action
// cannot reach the upper directories except through the overlays. The
// overlays hold their own references; the worker's descriptor keeps
// the tmpfs alive until it has captured the outputs and closes it.

// diskBudget is the tmpfs of one action, nil without a budget.
type diskBudget struct {
	fd int
}

// path names p inside the tmpfs through its descriptor: once the exec
// root is an overlay on the new root itself, the staging directory's
// path leads into that overlay instead.
func (b *diskBudget) path(p string) string {
	return fmt.Sprintf("/proc/self/fd/%d/%s", b.fd, p)
}

// mountDiskBudget mounts the tmpfs at stage, a mount point in the data
// roots' tmpfs, and moves the overlays' upper and work directories into
// it: the worker prepared the uppers (parents of outputs) on the host,
// so their directory skeleton is copied.
func mountDiskBudget(stage string, mounts []Mount, diskBytes int64) (*diskBudget, error) {
	if diskBytes <= 0 {
		return nil, nil
	}
	options := fmt.Sprintf("mode=0755,size=%d", diskBytes)
	if err := unix.Mount("tmpfs", stage, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, options); err != nil {
		return nil, fmt.Errorf("disk budget: mount tmpfs of %d bytes: %w", diskBytes, err)
	}
	fd, err := unix.Open(stage, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("disk budget: open tmpfs: %w", err)
	}
	b := &diskBudget{fd: fd}
	for i := range mounts {
		o := &mounts[i]
		upper, work := b.path(fmt.Sprintf("u%d", i)), b.path(fmt.Sprintf("w%d", i))
		if err := copyDirectories(o.UpperDir, upper); err != nil {
			return nil, fmt.Errorf("disk budget: overlay %q: %w", o.Path, err)
		}
		if err := os.Mkdir(work, 0o700); err != nil {
			return nil, fmt.Errorf("disk budget: overlay %q: %w", o.Path, err)
		}
		o.UpperDir, o.WorkDir = upper, work
	}
	return b, nil
}

// copyDirectories recreates the directories below src (what the
// worker prepared in an upper directory) at dst, with their modes.
func copyDirectories(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return fmt.Errorf("%q: only directories are expected in a prepared upper directory", p)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if err := os.Mkdir(target, 0o700); err != nil {
			return err
		}
		return unix.Chmod(target, uint32(info.Mode().Perm()))
	})
}

// handOver sends the tmpfs to the worker. Called once every overlay is
// mounted; the tmpfs is detached from the action's tree with the data
// roots (action_root.go).
func (b *diskBudget) handOver() error {
	if b == nil {
		return nil
	}
	defer unix.Close(b.fd)
	if err := unix.Sendmsg(ControlFD, []byte{DiskBudgetMessage}, unix.UnixRights(b.fd), nil, 0); err != nil {
		return fmt.Errorf("disk budget: send tmpfs to the worker: %w", err)
	}
	return nil
}

// DiskBudgetMessage is the one-byte message on the status socket that
// carries the tmpfs descriptor; the Status is the other message.
const DiskBudgetMessage = 'D'
