package child

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// buildTemplate makes the root every action of the slot starts from,
// on NewRoot, and pivots PID 1 into it. It follows runc's
// prepareRoot/pivotRoot: every mount private first, so nothing
// propagates to the host; everything mounted under the new root; then
// pivot_root and the old root detached, so no host path stays
// reachable but through the binds of the data roots, which each
// action's thread detaches before its command starts.
//
// The template holds: the host views (read-only overlays of /usr,
// /etc, ...; hostview.go) unless the slot's actions bring their own
// root, the exec root's and /tmp's mount points, PID 1's /proc, a
// read-only /dev, and below TemplateDir the binds of the data roots
// and mount points for an action's disk budget, layer links and whole
// root. The root tmpfs is read-only once built.
func buildTemplate(p *Prepare) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	newRoot := p.NewRoot
	if err := unix.Mount("tmpfs", newRoot, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m,nr_inodes=4096"); err != nil {
		return fmt.Errorf("mount root tmpfs on %q: %w", newRoot, err)
	}
	for _, dir := range []string{"data", "root"} {
		if err := os.MkdirAll(filepath.Join(newRoot, TemplateDir, dir), 0o755); err != nil {
			return fmt.Errorf("create %s/%s: %w", TemplateDir, dir, err)
		}
	}
	if !p.ExecRootIsRoot {
		view, err := newHostView(newRoot, p.LegacyOverlay)
		if err != nil {
			return err
		}
		defer view.close()
		for _, hostPath := range p.HostPaths {
			if err := bindHostPath(view, hostPath, newRoot); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(filepath.Join(newRoot, p.ExecRootPath), 0o755); err != nil {
			return fmt.Errorf("create exec root mount point: %w", err)
		}
		if err := os.Mkdir(filepath.Join(newRoot, "tmp"), 0o755); err != nil {
			return fmt.Errorf("create /tmp: %w", err)
		}
	}
	// Unbindable once the host views are made (overlayfs cannot take
	// a layer from an unbindable mount, and their empty layer is on
	// it): a data root that holds the new root (the worker's data
	// directory holds its state directory) is bound with its
	// submounts, and must not take the template along into itself.
	if err := unix.Mount("", newRoot, "", unix.MS_UNBINDABLE, ""); err != nil {
		return fmt.Errorf("make the root tmpfs unbindable: %w", err)
	}
	if err := bindDataRoots(p.DataRoots, filepath.Join(newRoot, DataRootDir)); err != nil {
		return err
	}
	// /proc serves PID 1 too (descriptor names, its threads); a
	// whole-root action mounts its own from it.
	if err := mountProc(filepath.Join(newRoot, "proc")); err != nil {
		return err
	}
	if err := mountDevTemplate(filepath.Join(newRoot, "dev")); err != nil {
		return err
	}
	return pivotRoot(newRoot, true)
}

// bindDataRoots mounts a tmpfs at dir and binds each data root, with
// its submounts, at dir/<index>; the tmpfs also holds the mount points
// of an action's disk budget and layer links. Detaching dir detaches
// them all at once: every unmount waits for an RCU grace period, a
// fifth of a millisecond here, on the action's path.
func bindDataRoots(roots []string, dir string) error {
	if len(roots) == 0 {
		return fmt.Errorf("no data roots: the sandbox could reach no layer")
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700,size=64k"); err != nil {
		return fmt.Errorf("mount the data roots' tmpfs: %w", err)
	}
	for _, staging := range []string{stagingBudget, stagingLinks} {
		if err := os.Mkdir(filepath.Join(dir, staging), 0o700); err != nil {
			return fmt.Errorf("create %s: %w", staging, err)
		}
	}
	for i, root := range roots {
		target := filepath.Join(dir, strconv.Itoa(i))
		if err := os.Mkdir(target, 0o700); err != nil {
			return fmt.Errorf("data root %q: create mount point: %w", root, err)
		}
		if err := unix.Mount(root, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("data root %q: bind: %w", root, err)
		}
	}
	return nil
}
