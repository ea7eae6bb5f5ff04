package child

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountActionRoot completes the template for one action, in the mount
// namespace its thread has just made (a copy of the template): the
// overlays of its exec root (their upper directories on the disk
// budget's tmpfs when it has one), its /tmp, /dev/pts and /dev/shm;
// the data roots detached. A whole-root action's exec root gets /proc
// and /dev and becomes the root. It returns where the command sees its
// exec root.
func mountActionRoot(p *Prepare, action *Action) (string, error) {
	wholeRoot := p.ExecRootIsRoot || action.ExecRootIsRoot
	execRoot := p.ExecRootPath
	if wholeRoot {
		execRoot = filepath.Join(TemplateDir, "root")
	}
	mounts, err := inDataRoots(p.DataRoots, action.Mounts)
	if err != nil {
		return "", err
	}
	budget, err := mountDiskBudget(filepath.Join(DataRootDir, stagingBudget), mounts, action.DiskBytes)
	if err != nil {
		return "", err
	}
	mounter := &overlayMounter{legacy: p.LegacyOverlay, linkDir: filepath.Join(DataRootDir, stagingLinks)}
	if err := mounter.mount(&mounts[0], execRoot); err != nil {
		return "", fmt.Errorf("exec root: %w", err)
	}
	for i := range mounts[1:] {
		overlay := &mounts[i+1]
		target := filepath.Join(execRoot, overlay.Path)
		// The planner only mounts at directories of the input tree,
		// which exist in the parent's layers; MkdirAll covers an
		// upper that a previous mount in this list shadows.
		if err := os.MkdirAll(target, 0o755); err != nil {
			return "", fmt.Errorf("overlay at %q: create mount point: %w", overlay.Path, err)
		}
		if err := mounter.mount(overlay, target); err != nil {
			return "", fmt.Errorf("overlay at %q: %w", overlay.Path, err)
		}
	}
	if err := budget.handOver(); err != nil {
		return "", err
	}
	shm := p.ShmSizeBytes
	if !wholeRoot {
		// The data roots, the disk budget's tmpfs and the layer
		// links: the overlays hold what they need of them.
		if err := unix.Unmount(DataRootDir, unix.MNT_DETACH); err != nil {
			return "", fmt.Errorf("detach the data roots: %w", err)
		}
		if err := mountDevOfAction("/dev", shm); err != nil {
			return "", err
		}
		return execRoot, mountTmp("/tmp", action.TmpSizeBytes)
	}
	if err := mountProc(filepath.Join(execRoot, "proc")); err != nil {
		return "", err
	}
	dev := filepath.Join(execRoot, "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return "", fmt.Errorf("create /dev: %w", err)
	}
	if err := unix.Mount("/dev", dev, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return "", fmt.Errorf("bind /dev: %w", err)
	}
	if err := mountDevOfAction(dev, shm); err != nil {
		return "", err
	}
	if err := mountTmp(filepath.Join(execRoot, "tmp"), action.TmpSizeBytes); err != nil {
		return "", err
	}
	// Detaching the old root detaches the data roots with it.
	return "/", pivotRoot(execRoot, false)
}

// DataRootOf returns the index of the longest of roots that holds
// path (a clean absolute path), or -1.
func DataRootOf(roots []string, path string) int {
	best := -1
	for i, root := range roots {
		if (path == root || root == "/" || strings.HasPrefix(path, root+"/")) && (best < 0 || len(root) > len(roots[best])) {
			best = i
		}
	}
	return best
}

// inDataRoots names the directories of mounts (host paths) through
// the template's binds of the data roots.
func inDataRoots(roots []string, mounts []Mount) ([]Mount, error) {
	name := func(path string) (string, error) {
		path = filepath.Clean(path)
		i := DataRootOf(roots, path)
		if i < 0 {
			return "", fmt.Errorf("%q lies in none of the sandbox's data directories %q", path, roots)
		}
		return filepath.Join(DataRootDir, strconv.Itoa(i), strings.TrimPrefix(path, roots[i])), nil
	}
	named := make([]Mount, len(mounts))
	for i, m := range mounts {
		named[i] = Mount{Path: m.Path, Layers: make([]string, len(m.Layers))}
		var err error
		for j, layer := range m.Layers {
			if named[i].Layers[j], err = name(layer); err != nil {
				return nil, err
			}
		}
		if named[i].UpperDir, err = name(m.UpperDir); err != nil {
			return nil, err
		}
		if named[i].WorkDir, err = name(m.WorkDir); err != nil {
			return nil, err
		}
	}
	return named, nil
}
