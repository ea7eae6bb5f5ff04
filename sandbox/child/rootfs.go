package child

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// devices are bound from the host: creating device nodes needs
// CAP_MKNOD in the initial user namespace, which a sandbox never has.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// bindHostPath makes a host path visible read-only at the same path
// under newRoot, a directory through view. Symlinks (the /bin -> usr/bin
// of a merged-/usr system) are recreated, not followed, so the sandbox
// sees the same layout as the host.
func bindHostPath(view *hostView, hostPath, newRoot string) error {
	target := filepath.Join(newRoot, hostPath)
	info, err := os.Lstat(hostPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("host path %q: %w", hostPath, err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("host path %q: create parent: %w", hostPath, err)
	}
	switch {
	case info.Mode()&os.ModeSymlink != 0:
		link, err := os.Readlink(hostPath)
		if err != nil {
			return fmt.Errorf("host path %q: %w", hostPath, err)
		}
		if err := os.Symlink(link, target); err != nil {
			return fmt.Errorf("host path %q: recreate symlink: %w", hostPath, err)
		}
		return nil
	case info.IsDir():
		if err := os.Mkdir(target, 0o755); err != nil {
			return fmt.Errorf("host path %q: create mount point: %w", hostPath, err)
		}
		return view.mountDirectory(hostPath, target)
	default:
		if err := createFile(target); err != nil {
			return fmt.Errorf("host path %q: create mount point: %w", hostPath, err)
		}
	}
	if err := bindReadOnly(hostPath, target); err != nil {
		return fmt.Errorf("host path %q: %w", hostPath, err)
	}
	return nil
}

// bindReadOnly binds source recursively at target, read-only all the
// way down. mount_setattr with AT_RECURSIVE does in one call what the
// old API can only do mount by mount, and cannot leave a writable
// submount behind.
func bindReadOnly(source, target string) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if errors.Is(err, unix.ENOSYS) {
		return bindReadOnlyLegacy(source, target)
	} else if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("mount_setattr read-only: %w", err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// bindReadOnlyLegacy is for kernels before 5.12. A bind remount must
// repeat the flags the kernel locked on the source, or it fails with
// EPERM inside a user namespace.
func bindReadOnlyLegacy(source, target string) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	locked := uintptr(st.Flags) & (unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME)
	flags := unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | locked
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		return fmt.Errorf("remount read-only: %w", err)
	}
	return nil
}

func createFile(path string) error {
	fd, err := unix.Open(path, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// mountProc mounts a /proc of PID 1's pid namespace (the slot's).
func mountProc(proc string) error {
	if err := os.MkdirAll(proc, 0o555); err != nil {
		return fmt.Errorf("create /proc: %w", err)
	}
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		// A container runtime that masks parts of its /proc prevents
		// a fresh proc mount in a nested user namespace.
		return fmt.Errorf("mount /proc (a container's masked /proc prevents this; Docker needs --security-opt systempaths=unconfined): %w", err)
	}
	return nil
}

// mountTmp gives the action a private, size-limited /tmp.
func mountTmp(tmp string, sizeBytes int64) error {
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("create /tmp: %w", err)
	}
	options := "mode=1777"
	if sizeBytes > 0 {
		options += fmt.Sprintf(",size=%d", sizeBytes)
	}
	if err := unix.Mount("tmpfs", tmp, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, options); err != nil {
		return fmt.Errorf("mount /tmp: %w", err)
	}
	return nil
}

// mountDevTemplate makes the template's /dev: the device nodes bound
// from the host, the usual links, and mount points for each action's
// own /dev/pts and /dev/shm. It is read-only once built: every action
// of the slot sees this one tmpfs.
func mountDevTemplate(dev string) error {
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return fmt.Errorf("create /dev: %w", err)
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k,nr_inodes=64"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, name := range devices {
		target := filepath.Join(dev, name)
		if err := createFile(target); err != nil {
			return fmt.Errorf("create /dev/%s: %w", name, err)
		}
		if err := unix.Mount("/dev/"+name, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", name, err)
		}
	}
	for _, dir := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, dir), 0o755); err != nil {
			return fmt.Errorf("create /dev/%s: %w", dir, err)
		}
	}
	links := [][2]string{
		{"pts/ptmx", "ptmx"},
		{"/proc/self/fd", "fd"},
		{"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"},
	}
	for _, link := range links {
		if err := os.Symlink(link[0], filepath.Join(dev, link[1])); err != nil {
			return fmt.Errorf("create /dev/%s: %w", link[1], err)
		}
	}
	if err := unix.Mount("", dev, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("remount /dev read-only: %w", err)
	}
	return nil
}

// mountDevOfAction gives an action a /dev/pts instance and a /dev/shm
// of its own, on the template's mount points under dev.
func mountDevOfAction(dev string, shmSizeBytes int64) error {
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount /dev/pts: %w", err)
	}
	if err := unix.Mount("tmpfs", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("mode=1777,size=%d", shmSizeBytes)); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	return nil
}

// pivotRoot makes newRoot the root and detaches the old one, using the
// pivot_root(".", ".") idiom so no directory for the old root is
// needed. A tmpfs root holding only mount points is then made
// read-only, so an action cannot park files outside its exec root and
// /tmp.
func pivotRoot(newRoot string, readOnly bool) error {
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("chdir to new root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir to /: %w", err)
	}
	if readOnly {
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return fmt.Errorf("remount / read-only: %w", err)
		}
	}
	return nil
}
