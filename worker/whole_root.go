package worker

import (
	"os"
	"path/filepath"

	"github.com/bitzel/bitzel-worker/layers"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

// WholeRootInstanceNameComponent, as the last component of an instance
// name ("whole-root", "main/whole-root"), makes each action sent under
// it run with its input root as "/" (BuildStream's contract: the input
// root holds the whole userland), whatever the worker does for other
// instance names. Outputs "." and paths climbing back to the input root
// are then accepted and returned as a directory. An instance name
// rather than a platform property: BuildStream lets a project choose
// its instance name but sends only OSFamily and ISA as its platform.
const WholeRootInstanceNameComponent = "whole-root"

// IsWholeRootInstanceName says whether actions under instanceName run
// with their input root as "/".
func IsWholeRootInstanceName(instanceName digest.InstanceName) bool {
	components := instanceName.GetComponents()
	return len(components) > 0 && components[len(components)-1] == WholeRootInstanceNameComponent
}

// sandboxMountPoints are the directories the sandbox creates at the top
// of a whole-root exec root to mount /proc, /dev and /tmp on.
var sandboxMountPoints = []string{"dev", "proc", "tmp"}

// removeSandboxMountPoints removes the mount points the sandbox created
// in a whole-root action's exec root, so that an output "." holds what
// the input root and the action put there, not the sandbox's
// scaffolding (as BuildStream's own sandbox removes the mount points it
// made). One is removed only when no input layer has it and it is
// empty in the upper directory: what the input or the action made
// stays.
func removeSandboxMountPoints(root *layers.InputRoot, uppers []string) {
	if len(root.Mounts) == 0 || len(uppers) == 0 {
		return
	}
	for _, name := range sandboxMountPoints {
		inInput := false
		for _, layer := range root.Mounts[0].Layers {
			if _, err := os.Lstat(filepath.Join(layer, name)); err == nil {
				inInput = true
				break
			}
		}
		upper := filepath.Join(uppers[0], name)
		if info, err := os.Lstat(upper); !inInput && err == nil && info.IsDir() {
			// Fails, as it should, on a directory that is not
			// empty.
			os.Remove(upper)
		}
	}
}
