package execution

import (
	"context"

	"github.com/bitzel/bitzel-worker/worker"
	"github.com/bitzel/bitzel-worker/worker/livelogs"
	"github.com/google/uuid"
)

// liveLogsContext is the context of one execution whose logs the
// registry offers to the client that started it, under names the
// operation's metadata gives while the action runs.
func liveLogsContext(ctx context.Context, registry *livelogs.Registry, op *operation, request *worker.Request) context.Context {
	return worker.WithLiveLogs(ctx, func(stdout, stderr livelogs.Source) func() {
		// A fresh id per run: the operation's name is shared by
		// every client whose Execute joined it.
		id, instance := uuid.NewString(), request.InstanceName.String()
		stdoutName, stderrName := livelogs.Name(instance, id, "stdout"), livelogs.Name(instance, id, "stderr")
		removeStdout := registry.Add(stdoutName, request.ClientIdentity, stdout)
		removeStderr := registry.Add(stderrName, request.ClientIdentity, stderr)
		op.setStreamNames(stdoutName, stderrName)
		return func() {
			op.setStreamNames("", "")
			removeStdout()
			removeStderr()
		}
	})
}
