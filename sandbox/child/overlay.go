package child

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxLowers is the kernel's limit on overlay lower layers
// (OVL_MAX_STACK).
const MaxLowers = 500

// errNoLowerdirPlus means the kernel has the mount API but its
// overlayfs predates "lowerdir+" (added in 6.8).
var errNoLowerdirPlus = errors.New("overlayfs does not support lowerdir+")

// overlayMounter mounts overlays. userxattr is required for an
// overlay mounted inside a user namespace; it also disables redirects
// and metacopy, so an upper directory is self-contained, which the
// worker relies on when it reads outputs from the upper directory after
// the mount namespace is gone.
type overlayMounter struct {
	legacy bool
	// linkDir, a mount point in the data roots' tmpfs, gets a tmpfs
	// of short names for the layers of a legacy mount whose option
	// string would not fit; it is detached with the data roots.
	linkDir string
	links   int
}

func (m *overlayMounter) mount(overlay *Mount, target string) error {
	if len(overlay.Layers) == 0 {
		return fmt.Errorf("overlay has no lower layer")
	}
	if len(overlay.Layers) > MaxLowers {
		return fmt.Errorf("overlay has %d lower layers, the kernel allows %d", len(overlay.Layers), MaxLowers)
	}
	names, closeNames, err := nameByDescriptor(overlay)
	if err != nil {
		return err
	}
	defer closeNames()
	if !m.legacy {
		err := mountOverlayWithFsopen(overlay, names, target)
		if err == nil || !(errors.Is(err, unix.ENOSYS) || errors.Is(err, errNoLowerdirPlus)) {
			return err
		}
	}
	return m.mountLegacy(overlay, names, target)
}

// mountOverlayWithFsopen passes each lower layer as its own
// "lowerdir+" parameter: no option string to outgrow a page, no
// escaping of ':' and ','. names are what the kernel is given (and
// shows); overlay's paths name the layers in errors.
func mountOverlayWithFsopen(overlay, names *Mount, target string) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	// What df and mount show as the device ("none" otherwise).
	unix.FsconfigSetString(fsfd, "source", "overlay")
	for i, lower := range overlay.Layers {
		if err := unix.FsconfigSetString(fsfd, "lowerdir+", names.Layers[i]); err != nil {
			if i == 0 && errors.Is(err, unix.EINVAL) && strings.Contains(fsContextLog(fsfd), "lowerdir+") {
				return errNoLowerdirPlus
			}
			return fmt.Errorf("lower layer %q: %w%s", lower, err, logSuffix(fsfd))
		}
	}
	if err := unix.FsconfigSetString(fsfd, "upperdir", names.UpperDir); err != nil {
		return fmt.Errorf("upper directory %q: %w%s", overlay.UpperDir, err, logSuffix(fsfd))
	}
	if err := unix.FsconfigSetString(fsfd, "workdir", names.WorkDir); err != nil {
		return fmt.Errorf("work directory %q: %w%s", overlay.WorkDir, err, logSuffix(fsfd))
	}
	if err := unix.FsconfigSetFlag(fsfd, "userxattr"); err != nil {
		return fmt.Errorf("userxattr: %w%s", err, logSuffix(fsfd))
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("create overlay: %w%s", err, logSuffix(fsfd))
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w%s", err, logSuffix(fsfd))
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move overlay to %q: %w", target, err)
	}
	return nil
}

// fsContextLog drains the messages the kernel queued on a file system
// context: they name the parameter it rejected, which errno cannot.
func fsContextLog(fsfd int) string {
	var messages []string
	buf := make([]byte, 1024)
	for {
		n, err := unix.Read(fsfd, buf)
		if err != nil || n <= 0 {
			break
		}
		messages = append(messages, strings.TrimSpace(string(buf[:n])))
	}
	return strings.Join(messages, "; ")
}

func logSuffix(fsfd int) string {
	if log := fsContextLog(fsfd); log != "" {
		return " (kernel: " + log + ")"
	}
	return ""
}

// mountLegacy builds the option string of mount(2), for kernels
// before 6.8. The data page holds 4095 bytes: 400 cache paths are far
// longer, so when they do not fit, each layer gets a short symlink
// ("0", "1", ...) in linkDir and the options name those relative to it.
// overlayfs resolves the links when it mounts.
func (m *overlayMounter) mountLegacy(overlay, names *Mount, target string) error {
	options := legacyOptions(names.Layers, names.UpperDir, names.WorkDir)
	limit := os.Getpagesize() - 1
	if len(options) < limit {
		if err := unix.Mount("overlay", target, "overlay", 0, options); err != nil {
			return fmt.Errorf("mount overlay on %q: %w", target, err)
		}
		return nil
	}
	if m.links == 0 {
		if err := unix.Mount("tmpfs", m.linkDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
			return fmt.Errorf("mount the layer links' tmpfs: %w", err)
		}
	}
	links := make([]string, len(overlay.Layers))
	for i, lower := range overlay.Layers {
		links[i] = strconv.Itoa(m.links)
		m.links++
		if err := os.Symlink(lower, filepath.Join(m.linkDir, links[i])); err != nil {
			return fmt.Errorf("link layer %q: %w", lower, err)
		}
	}
	options = legacyOptions(links, names.UpperDir, names.WorkDir)
	if len(options) >= limit {
		return fmt.Errorf("overlay options are %d bytes even with short layer names, over the %d of a page", len(options), limit)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("get working directory: %w", err)
	}
	if err := unix.Chdir(m.linkDir); err != nil {
		return fmt.Errorf("chdir to layer links: %w", err)
	}
	defer unix.Chdir(cwd)
	if err := unix.Mount("overlay", target, "overlay", 0, options); err != nil {
		return fmt.Errorf("mount overlay on %q: %w", target, err)
	}
	return nil
}

func legacyOptions(lowers []string, upper, work string) string {
	escaped := make([]string, len(lowers))
	for i, lower := range lowers {
		escaped[i] = escapeOverlayPath(lower)
	}
	return "lowerdir=" + strings.Join(escaped, ":") +
		",upperdir=" + escapeOverlayPath(upper) +
		",workdir=" + escapeOverlayPath(work) +
		",userxattr"
}

// escapeOverlayPath protects the separators of the option string.
func escapeOverlayPath(path string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`).Replace(path)
}
