package worker

import (
	"context"

	"github.com/bitzel/bitzel-worker/layers"
)

// inputLayersKey carries, in an action's context, where the local
// executor reports the layers it placed. A context value rather than
// an Observer argument: only the recording executor listens, and the
// decorators in between need not know.
type inputLayersKey struct{}

func withInputLayersListener(ctx context.Context, listen func([]layers.LayerUse)) context.Context {
	return context.WithValue(ctx, inputLayersKey{}, listen)
}

// reportInputLayers tells the listener (if any) which layers of the
// input root were cached and which were built.
func reportInputLayers(ctx context.Context, root *layers.InputRoot) {
	if listen, ok := ctx.Value(inputLayersKey{}).(func([]layers.LayerUse)); ok {
		listen(root.Layers)
	}
}
