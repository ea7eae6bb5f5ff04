package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bitzel/bitzel-worker/sandbox/child"
	"golang.org/x/sys/unix"
)

// action is spec's part of the sandbox, as PID 1 receives it: the
// mounts go as they are, one description from the worker's plan to the
// child.
func (r *namespaceRunner) action(spec *Spec) *child.Action {
	return &child.Action{
		Mounts:           spec.Mounts,
		TmpSizeBytes:     spec.Limits.TmpSizeBytes,
		DiskBytes:        spec.Limits.DiskBytes,
		ExecRootIsRoot:   spec.ExecRootIsRoot,
		Argv:             spec.Argv,
		Env:              spec.Env,
		WorkingDirectory: spec.WorkingDirectory,
	}
}

// validate catches what would otherwise surface as an errno from deep
// inside the child, and names the offending path.
func (r *namespaceRunner) validate(spec *Spec) error {
	if len(spec.Argv) == 0 {
		return errors.New("sandbox: no command")
	}
	if len(spec.Mounts) == 0 || spec.Mounts[0].Path != "" {
		return errors.New("sandbox: the first mount must be the exec root (empty path)")
	}
	if !filepath.IsLocal(spec.WorkingDirectory) && spec.WorkingDirectory != "" {
		return fmt.Errorf("sandbox: working directory %q is not a relative path inside the exec root", spec.WorkingDirectory)
	}
	for i, m := range spec.Mounts {
		if i > 0 && !filepath.IsLocal(m.Path) {
			return fmt.Errorf("sandbox: mount path %q is not a relative path inside the exec root", m.Path)
		}
		if len(m.Layers) == 0 {
			return fmt.Errorf("sandbox: mount %q has no layers", m.Path)
		}
		if len(m.Layers) > child.MaxLowers {
			return fmt.Errorf("sandbox: mount %q has %d layers; the kernel allows %d", m.Path, len(m.Layers), child.MaxLowers)
		}
		for _, dir := range append([]string{m.UpperDir, m.WorkDir}, m.Layers...) {
			if !filepath.IsAbs(dir) {
				return fmt.Errorf("sandbox: mount %q: %q is not an absolute path", m.Path, dir)
			}
			if child.DataRootOf(r.config.DataRoots, filepath.Clean(dir)) < 0 {
				return fmt.Errorf("sandbox: mount %q: %q is in none of the runner's data directories %q", m.Path, dir, r.config.DataRoots)
			}
			var st unix.Stat_t
			if err := unix.Stat(dir, &st); err != nil {
				return fmt.Errorf("sandbox: mount %q: %q: %w", m.Path, dir, err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return fmt.Errorf("sandbox: mount %q: %q is not a directory", m.Path, dir)
			}
		}
	}
	return nil
}

// chownUppers hands the upper and work directories (and whatever the
// worker created in them, such as the parents of outputs) to the
// action's root. Inside the user namespace, files owned by an unmapped
// uid are not writable even by its root.
func (r *namespaceRunner) chownUppers(spec *Spec) error {
	id := int(r.config.HostIDBase)
	for _, m := range spec.Mounts {
		for _, dir := range []string{m.UpperDir, m.WorkDir} {
			err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				return os.Lchown(path, id, id)
			})
			if err != nil {
				return fmt.Errorf("sandbox: hand %q to the action's uid: %w", dir, err)
			}
		}
	}
	return nil
}
