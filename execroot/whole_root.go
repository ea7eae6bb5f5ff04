package execroot

import (
	"os"
	"path/filepath"
)

// sandboxMountPoints are the directories the sandbox creates at the top
// of a whole-root exec root to mount /proc, /dev and /tmp on.
var sandboxMountPoints = []string{"dev", "proc", "tmp"}

// RemoveSandboxMountPoints removes the mount points the sandbox created
// in a whole-root action's exec root, so that an output "." holds what
// the input root and the action put there, not the sandbox's
// scaffolding (as BuildStream's own sandbox removes the mount points it
// made). One is removed only when no input layer has it and it is
// empty in the upper directory: what the input or the action made
// stays.
func (r *ExecRoot) RemoveSandboxMountPoints() {
	if len(r.mounts) == 0 {
		return
	}
	for _, name := range sandboxMountPoints {
		inInput := false
		for _, layer := range r.mounts[0].Layers {
			if _, err := os.Lstat(filepath.Join(layer, name)); err == nil {
				inInput = true
				break
			}
		}
		upper := filepath.Join(r.uppers[0], name)
		if info, err := os.Lstat(upper); !inInput && err == nil && info.IsDir() {
			// Fails, as it should, on a directory that is not
			// empty.
			os.Remove(upper)
		}
	}
}
