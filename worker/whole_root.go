package worker

import (
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
