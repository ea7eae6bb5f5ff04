package child

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// hostView presents host directories (/usr, /etc, /opt) to the sandbox
// through read-only overlays rather than binds. A bind exposes the
// host's inodes, and connect(2) on a pathname socket reaches whatever
// daemon listens on it, read-only or not; through an overlay the
// socket file is an overlay inode that no socket is bound to, so
// connect fails with ECONNREFUSED. This is how network isolation holds
// for Unix sockets, not only for IP.
//
// A tree with a mount below it (Docker's /etc/resolv.conf) cannot be
// overlaid as a whole in a user namespace; it is rebuilt entry by
// entry instead (hostrebuild.go), which keeps its sockets out too. The
// worker names such trees when it starts (sandbox.HostTreesRebuilt).
type hostView struct {
	// empty is the bottom layer of every host overlay: overlayfs
	// needs two lower layers when it has no upper one.
	empty       string
	emptyFD     int
	legacy      bool
	mountPoints []string
}

func newHostView(newRoot string, legacy bool) (*hostView, error) {
	empty := filepath.Join(newRoot, ".empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		return nil, fmt.Errorf("create empty layer: %w", err)
	}
	fd, err := unix.Open(empty, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open empty layer: %w", err)
	}
	mountPoints, err := ReadMountPoints("/proc/self/mountinfo")
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &hostView{empty: empty, emptyFD: fd, legacy: legacy, mountPoints: mountPoints}, nil
}

// close removes the empty layer's name from the root: the overlays
// hold it by reference.
func (v *hostView) close() {
	unix.Close(v.emptyFD)
	os.Remove(v.empty)
}

// mountDirectory presents hostPath at target.
func (v *hostView) mountDirectory(hostPath, target string) error {
	var err error
	if len(MountsBelow(v.mountPoints, hostPath)) > 0 {
		err = v.rebuildTree(hostPath, target)
	} else {
		err = v.mountOverlay(hostPath, target)
	}
	if err != nil {
		return fmt.Errorf("host path %q: %w", hostPath, err)
	}
	return nil
}

// MountsBelow returns the mount points strictly below dir.
func MountsBelow(mountPoints []string, dir string) []string {
	prefix := filepath.Clean(dir) + "/"
	var below []string
	for _, m := range mountPoints {
		if strings.HasPrefix(m, prefix) {
			below = append(below, m)
		}
	}
	return below
}

func (v *hostView) mountOverlay(source, target string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(source, &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	attr := uint64(unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV)
	if st.Flags&unix.ST_NOEXEC != 0 {
		attr |= unix.MOUNT_ATTR_NOEXEC
	}
	// The empty layer is named by descriptor so that mountinfo does
	// not show where the worker keeps its state.
	empty := "/proc/self/fd/" + strconv.Itoa(v.emptyFD)
	if !v.legacy {
		err := mountReadOnlyOverlay(source, empty, target, attr)
		if err == nil || !(errors.Is(err, unix.ENOSYS) || errors.Is(err, errNoLowerdirPlus)) {
			return err
		}
	}
	flags := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
	if attr&unix.MOUNT_ATTR_NOEXEC != 0 {
		flags |= unix.MS_NOEXEC
	}
	options := "lowerdir=" + escapeOverlayPath(source) + ":" + empty + ",userxattr"
	if err := unix.Mount("overlay", target, "overlay", flags, options); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	return nil
}

func mountReadOnlyOverlay(source, empty, target string, attr uint64) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	unix.FsconfigSetString(fsfd, "source", "overlay")
	if err := unix.FsconfigSetString(fsfd, "lowerdir+", source); err != nil {
		if errors.Is(err, unix.EINVAL) && strings.Contains(fsContextLog(fsfd), "lowerdir+") {
			return errNoLowerdirPlus
		}
		return fmt.Errorf("lower layer: %w%s", err, logSuffix(fsfd))
	}
	for _, step := range []func() error{
		func() error { return unix.FsconfigSetString(fsfd, "lowerdir+", empty) },
		func() error { return unix.FsconfigSetFlag(fsfd, "userxattr") },
		func() error { return unix.FsconfigCreate(fsfd) },
	} {
		if err := step(); err != nil {
			return fmt.Errorf("overlay: %w%s", err, logSuffix(fsfd))
		}
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(attr))
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w%s", err, logSuffix(fsfd))
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move overlay to %q: %w", target, err)
	}
	return nil
}

// ReadMountPoints lists the mount points of a mountinfo file.
func ReadMountPoints(mountinfo string) ([]string, error) {
	data, err := ReadFileDirect(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("read host mounts: %w", err)
	}
	var mountPoints []string
	scanner := bufio.NewScanner(bytes.NewReader(data))
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) > 4 {
			mountPoints = append(mountPoints, unescapeMountinfo(fields[4]))
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("read host mounts: %w", err)
	}
	return mountPoints, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a
// space, \011, \012, \134).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
