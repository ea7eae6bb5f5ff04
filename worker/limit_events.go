package worker

import (
	"fmt"
	"strings"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/sandbox"
	"google.golang.org/protobuf/types/known/anypb"
)

// A command can exit 0 although the kernel killed one of its processes
// for memory (a shell that ignores its child's status), or a fork was
// refused at the process limit: the outputs are then whatever the
// survivors made of it. Such a result is reported, but never written
// to the Action Cache, where every later build would be served it.

// notCachedField names the auxiliary metadata field that says why a
// result was not cached; its presence is what the caching decorator
// reads.
const notCachedField = "not_cached_because"

// limitEvents says which limits the action ran into, "" if none.
func limitEvents(run *sandbox.Result, limits sandbox.Limits) string {
	var events []string
	if run.OOMKilled {
		events = append(events, fmt.Sprintf("the kernel killed a process of the action for exceeding its memory limit of %d bytes", limits.MemoryBytes))
	}
	if run.PidsLimitHit {
		events = append(events, fmt.Sprintf("a process of the action was refused a fork at its limit of %d processes", limits.MaxProcesses))
	}
	if run.DiskBudgetExceeded {
		events = append(events, fmt.Sprintf("the action filled its disk budget of %d bytes", limits.DiskBytes))
	}
	return strings.Join(events, "; ")
}

// notCachedMetadata records in the result why it is not cached.
func notCachedMetadata(reason string) *anypb.Any {
	return structMetadata(map[string]any{notCachedField: reason})
}

// notCachedReason returns what notCachedMetadata recorded, if any.
func notCachedReason(result *remoteexecution.ActionResult) (string, bool) {
	for _, a := range result.GetExecutionMetadata().GetAuxiliaryMetadata() {
		if v, ok := structField(a, notCachedField); ok {
			return v.GetStringValue(), true
		}
	}
	return "", false
}
