package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/sandbox"
)

// overlayDirs makes the overlays of the sandbox command from directories
// named on its command line, and removes the temporary directories it
// created for them (uppers not given with --upper, work directories)
// when the command ends, whether or not it ran.
type overlayDirs struct {
	temporary []string
}

// add checks the layer directories of the overlay at path (relative to
// the exec root) and gives it an upper and a work directory. what names
// the flag the layers came from, for errors.
func (o *overlayDirs) add(path, what string, layerDirs []string, upperDir string) (sandbox.Mount, error) {
	m := sandbox.Mount{Path: path}
	for _, layer := range layerDirs {
		abs, err := filepath.Abs(layer)
		if err != nil {
			return m, err
		}
		info, err := os.Stat(abs)
		switch {
		case os.IsNotExist(err):
			return m, fmt.Errorf("%s: layer directory %s does not exist", what, abs)
		case err != nil:
			return m, fmt.Errorf("%s: layer directory: %w", what, err)
		case !info.IsDir():
			return m, fmt.Errorf("%s: layer %s is not a directory", what, abs)
		}
		m.Layers = append(m.Layers, abs)
	}
	if upperDir == "" {
		dir, err := os.MkdirTemp("", "bitzel-upper-")
		if err != nil {
			return m, err
		}
		o.temporary = append(o.temporary, dir)
		upperDir = dir
	}
	upperDir, err := filepath.Abs(upperDir)
	if err != nil {
		return m, err
	}
	if err := os.MkdirAll(upperDir, 0o755); err != nil {
		return m, fmt.Errorf("--upper: %w", err)
	}
	// The upper's mode is the exec root's mode.
	if err := os.Chmod(upperDir, 0o755); err != nil {
		return m, fmt.Errorf("--upper: %w", err)
	}
	// The work directory must be on the upper's file system.
	work, err := os.MkdirTemp(filepath.Dir(upperDir), ".bitzel-work-")
	if err != nil {
		return m, fmt.Errorf("work directory beside the upper %s: %w", upperDir, err)
	}
	o.temporary = append(o.temporary, work)
	m.UpperDir, m.WorkDir = upperDir, work
	return m, nil
}

func (o *overlayDirs) remove() {
	for _, dir := range o.temporary {
		if err := fsutil.RemoveAll(dir); err != nil {
			fmt.Fprintf(os.Stderr, "bitzel-worker sandbox: remove %s: %v\n", dir, err)
		}
	}
}

// warnUnmappedLayers says which layers the command will see as
// nobody:nogroup. The worker's own layers belong to the action's root
// (the host uid it maps to); a directory given to sandbox belongs to
// whoever made it. As root, the command's ids 0..65535 are host ids
// 1000000000.. (never the host's root), so a layer owned by the host's
// root is outside the map: readable, but not the command's to change.
func warnUnmappedLayers(spec *sandbox.Spec, config sandbox.Config) {
	rootUID, _ := config.ActionRootIDs()
	mapped := 1 // rootless: only the user's own uid
	if os.Geteuid() == 0 {
		mapped = sandbox.DefaultHostIDCount
	}
	for _, m := range spec.Mounts {
		for _, layer := range m.Layers {
			info, err := os.Stat(layer)
			if err != nil || isEmptyDirectory(layer) {
				continue
			}
			owner := int(info.Sys().(*syscall.Stat_t).Uid)
			if owner >= rootUID && owner < rootUID+mapped {
				continue
			}
			fmt.Fprintf(os.Stderr, "bitzel-worker sandbox: layer %s belongs to host uid %d, outside the command's ids (its root is host uid %d, "+
				"as the worker's own layers are): inside, its files show as nobody:nogroup and the command cannot change them in place. "+
				"To see it as an action would: chown -R %d:%d %s, or run sandbox as the user who owns it\n",
				layer, owner, rootUID, rootUID, rootUID, layer)
		}
	}
}

func isEmptyDirectory(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) == 0
}
