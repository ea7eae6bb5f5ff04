package child

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// rebuildTree presents hostDir at target entry by entry. It is for a
// host tree with a mount below it (Docker's /etc/resolv.conf): in a
// mount namespace copied into a user namespace those mounts are locked
// to their parent, and the kernel refuses an overlay of any directory
// that would reveal what they cover ("failed to clone lowerpath"). A
// recursive bind of the whole tree would work, but a bind keeps the
// host's socket inodes, and connect(2) on them reaches the daemons
// listening there. So only the directories on the way to a mount are
// recreated on the root tmpfs; everything else is presented as the
// host view presents a whole tree: a directory without a mount below it
// (a sub-mount's root included) through a read-only overlay, a regular
// file through a read-only bind of that file alone, a symlink
// recreated. Sockets, FIFOs and device nodes are left out: a FIFO
// shared with the host is a channel to it as much as a socket is, and
// the sandbox's own /dev has the devices an action needs.
func (v *hostView) rebuildTree(hostDir, target string) error {
	entries, err := os.ReadDir(hostDir)
	if errors.Is(err, unix.EACCES) {
		// A directory the sandbox's root cannot list (owned by an
		// unmapped host id, mode 0700 or 0710) cannot be rebuilt;
		// its entries stay reachable as before, bound.
		return bindReadOnly(hostDir, target)
	} else if err != nil {
		return fmt.Errorf("list %q: %w", hostDir, err)
	}
	for _, entry := range entries {
		source := filepath.Join(hostDir, entry.Name())
		if err := v.presentEntry(source, filepath.Join(target, entry.Name())); err != nil {
			return err
		}
	}
	return nil
}

// presentEntry presents one entry of a rebuilt tree. Lstat sees what
// is mounted on a mount point, not the inode under it.
func (v *hostView) presentEntry(source, target string) error {
	if source == filepath.Dir(v.empty) {
		// The sandbox's own root, when the data directory is
		// under a host tree: nothing of the host to show, and
		// listing it would recurse into what is being built.
		return nil
	}
	info, err := os.Lstat(source)
	if errors.Is(err, os.ErrNotExist) {
		// Removed on the host since the directory was listed.
		return nil
	} else if err != nil {
		return fmt.Errorf("%q: %w", source, err)
	}
	mode := info.Mode()
	switch {
	case mode&os.ModeSymlink != 0:
		link, err := os.Readlink(source)
		if err != nil {
			return fmt.Errorf("%q: %w", source, err)
		}
		if err := os.Symlink(link, target); err != nil {
			return fmt.Errorf("%q: recreate symlink: %w", source, err)
		}
	case mode.IsDir():
		if err := os.Mkdir(target, 0o755); err != nil {
			return fmt.Errorf("%q: create mount point: %w", source, err)
		}
		if len(MountsBelow(v.mountPoints, source)) > 0 {
			// The root tmpfs is read-only once the sandbox is
			// built: a recreated directory keeps the host's
			// permission bits, not its owner.
			if err := os.Chmod(target, mode&(os.ModePerm|os.ModeSticky|os.ModeSetgid)); err != nil {
				return fmt.Errorf("%q: %w", source, err)
			}
			return v.rebuildTree(source, target)
		}
		if err := v.mountOverlay(source, target); err != nil {
			return fmt.Errorf("%q: %w", source, err)
		}
	case mode.IsRegular():
		if err := createFile(target); err != nil {
			return fmt.Errorf("%q: create mount point: %w", source, err)
		}
		if err := bindReadOnly(source, target); err != nil {
			return fmt.Errorf("%q: %w", source, err)
		}
	}
	return nil
}
