package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/bitzel/bitzel-worker/sandbox"
	"golang.org/x/sys/unix"
)

// holdUserNamespaceCommand is a hidden command: it only waits for its
// standard input to close. idmappedLayers starts it in a new user
// namespace whose map is the actions' one, to have a file descriptor
// of such a namespace for mount_setattr(2); a Go program cannot
// unshare(CLONE_NEWUSER) itself (it has threads).
const holdUserNamespaceCommand = "__hold-user-namespace"

func holdUserNamespace() int {
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// idmappedLayers shows the sandbox command's layers, as root, the way
// the worker's own layers are shown to its actions. As root the
// command's ids 0..N-1 are host ids B..B+N-1 (never the host's root);
// the worker's layers belong to host uid B, the action's root, but a
// directory given to `sandbox` belongs to whoever made it, usually the
// host's root, which is outside the map: inside, its files would read
// nobody:nogroup and nothing in them could be changed. Each such layer
// is bound read-only through an idmapped mount (host id k shown as
// B+k), so that inside, host root's files are the command's root's,
// as in an action, and writes copy up into the upper directory. The
// layer itself is never changed.
type idmappedLayers struct {
	dir    string   // holds the mount points; removed at the end
	mounts []string // attached idmapped mounts, unmounted at the end
}

// mapLayers replaces, in spec, each layer directory whose owner is
// outside the command's ids by an idmapped view of it. It does
// nothing rootless (the user's own files are already root's inside).
// A layer that cannot be idmapped (a file system without support,
// a kernel before 5.19 for overlayfs on idmapped layers) is left as it
// is, with the reason returned for the warning.
func (l *idmappedLayers) mapLayers(spec *sandbox.Spec, config sandbox.Config) error {
	if os.Geteuid() != 0 {
		return nil
	}
	base, _ := config.ActionRootIDs()
	count := int(config.HostIDCount)
	if count == 0 {
		count = sandbox.DefaultHostIDCount
	}
	var userns *os.File
	defer func() {
		if userns != nil {
			userns.Close()
		}
	}()
	for i := range spec.Mounts {
		for j, layer := range spec.Mounts[i].Layers {
			if !outsideIDs(layer, base, count) {
				continue
			}
			if userns == nil {
				var err error
				if userns, err = actionUserNamespace(base, count); err != nil {
					return err
				}
			}
			view, err := l.bind(layer, userns)
			if err != nil {
				return err
			}
			spec.Mounts[i].Layers[j] = view
		}
	}
	return nil
}

// outsideIDs says whether a layer's top directory belongs to a host uid
// the command's ids do not reach.
func outsideIDs(layer string, base, count int) bool {
	info, err := os.Stat(layer)
	if err != nil {
		return false
	}
	owner := int(info.Sys().(*syscall.Stat_t).Uid)
	return owner < base || owner >= base+count
}

// actionUserNamespace returns a user namespace mapping ids 0..count-1 to
// host ids base.., as an action's, held by a child process only as
// long as it takes to open it.
func actionUserNamespace(base, count int) (*os.File, error) {
	cmd := exec.Command("/proc/self/exe", holdUserNamespaceCommand)
	idMap := []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: count}}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: idMap,
		GidMappings: idMap,
		Pdeathsig:   syscall.SIGKILL,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("user namespace for idmapped layers: %w", err)
	}
	userns, err := os.Open(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "ns", "user"))
	stdin.Close()
	cmd.Wait()
	if err != nil {
		return nil, fmt.Errorf("user namespace for idmapped layers: %w", err)
	}
	return userns, nil
}

// bind attaches a read-only idmapped copy of the layer's mount tree at a
// new directory and returns its path.
func (l *idmappedLayers) bind(layer string, userns *os.File) (string, error) {
	if l.dir == "" {
		dir, err := os.MkdirTemp("", "bitzel-layers-")
		if err != nil {
			return "", err
		}
		// The sandbox reaches the layers as the command's root,
		// host uid B: it must be able to search this directory.
		if err := os.Chmod(dir, 0o711); err != nil {
			os.Remove(dir)
			return "", err
		}
		l.dir = dir
	}
	target := filepath.Join(l.dir, strconv.Itoa(len(l.mounts)))
	if err := os.Mkdir(target, 0o700); err != nil {
		return "", err
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, layer, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		os.Remove(target)
		return "", fmt.Errorf("layer %s: open_tree: %w", layer, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{
		Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY,
		Userns_fd: uint64(userns.Fd()),
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		os.Remove(target)
		return "", fmt.Errorf("layer %s: idmapped mount (mount_setattr): %w", layer, err)
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		os.Remove(target)
		return "", fmt.Errorf("layer %s: move_mount: %w", layer, err)
	}
	l.mounts = append(l.mounts, target)
	return target, nil
}

// remove detaches the idmapped mounts and removes their directories.
// The directories are removed with rmdir only, and only once detached:
// a recursive removal through a mount still attached would delete the
// user's layer.
func (l *idmappedLayers) remove() error {
	var errs []error
	for _, target := range l.mounts {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", target, err))
			continue
		}
		if err := os.Remove(target); err != nil {
			errs = append(errs, err)
		}
	}
	l.mounts = nil
	if l.dir != "" && len(errs) == 0 {
		if err := os.Remove(l.dir); err != nil {
			errs = append(errs, err)
		}
		l.dir = ""
	}
	return errors.Join(errs...)
}
