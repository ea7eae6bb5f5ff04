package child

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxLowers is the kernel's limit on overlay lower layers
// (OVL_MAX_STACK).
const MaxLowers = 500

// errNoLowerdirPlus means the kernel has the mount API but its
// overlayfs predates "lowerdir+" (added in 6.8).
var errNoLowerdirPlus = errors.New("overlayfs does not support lowerdir+")

// mountOverlay mounts one overlay at target. userxattr is required for
// an overlay mounted inside a user namespace; it also disables
// redirects and metacopy, so an upper directory is self-contained,
// which the worker relies on when it reads outputs from the upper
// directory after the mount namespace is gone.
func mountOverlay(overlay *Overlay, target string, legacy bool) error {
	if len(overlay.Lowers) == 0 {
		return fmt.Errorf("overlay has no lower layer")
	}
	if len(overlay.Lowers) > MaxLowers {
		return fmt.Errorf("overlay has %d lower layers, the kernel allows %d", len(overlay.Lowers), MaxLowers)
	}
	if !legacy {
		err := mountOverlayWithFsopen(overlay, target)
		if err == nil || !(errors.Is(err, unix.ENOSYS) || errors.Is(err, errNoLowerdirPlus)) {
			return err
		}
	}
	return mountOverlayLegacy(overlay, target)
}

// mountOverlayWithFsopen passes each lower layer as its own
// "lowerdir+" parameter: no option string to outgrow a page, no
// escaping of ':' and ','.
func mountOverlayWithFsopen(overlay *Overlay, target string) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	for i, lower := range overlay.Lowers {
		if err := unix.FsconfigSetString(fsfd, "lowerdir+", lower); err != nil {
			if i == 0 && errors.Is(err, unix.EINVAL) && strings.Contains(fsContextLog(fsfd), "lowerdir+") {
				return errNoLowerdirPlus
			}
			return fmt.Errorf("lower layer %q: %w%s", lower, err, logSuffix(fsfd))
		}
	}
	if err := unix.FsconfigSetString(fsfd, "upperdir", overlay.Upper); err != nil {
		return fmt.Errorf("upper directory %q: %w%s", overlay.Upper, err, logSuffix(fsfd))
	}
	if err := unix.FsconfigSetString(fsfd, "workdir", overlay.Work); err != nil {
		return fmt.Errorf("work directory %q: %w%s", overlay.Work, err, logSuffix(fsfd))
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

// mountOverlayLegacy builds the option string of mount(2). The data
// page holds 4095 bytes; when absolute paths do not fit, they are made
// relative to their common parent, the way containerd shortens them.
func mountOverlayLegacy(overlay *Overlay, target string) error {
	lowers := overlay.Lowers
	upper, work := overlay.Upper, overlay.Work
	options := legacyOptions(lowers, upper, work)
	if len(options) >= os.Getpagesize()-1 {
		common := commonParent(append([]string{upper, work}, lowers...))
		if common == "" || common == "/" {
			return fmt.Errorf("overlay options are %d bytes, over the %d of a page, and the layers share no parent directory", len(options), os.Getpagesize()-1)
		}
		cwd, err := os.Getwd()
		if err != nil {
			return fmt.Errorf("get working directory: %w", err)
		}
		if err := unix.Chdir(common); err != nil {
			return fmt.Errorf("chdir to layer parent %q: %w", common, err)
		}
		defer unix.Chdir(cwd)
		relative := make([]string, len(lowers))
		for i, lower := range lowers {
			relative[i] = strings.TrimPrefix(lower, common+"/")
		}
		options = legacyOptions(relative, strings.TrimPrefix(upper, common+"/"), strings.TrimPrefix(work, common+"/"))
		if len(options) >= os.Getpagesize()-1 {
			return fmt.Errorf("overlay options are %d bytes even with relative paths, over the %d of a page", len(options), os.Getpagesize()-1)
		}
	}
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

func commonParent(paths []string) string {
	common := filepath.Dir(paths[0])
	for _, path := range paths[1:] {
		for common != "/" && !strings.HasPrefix(path, common+"/") {
			common = filepath.Dir(common)
		}
	}
	return common
}
