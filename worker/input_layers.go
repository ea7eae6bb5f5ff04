package worker

import (
	"context"

	"github.com/bitzel/bitzel-worker/cas"
)

// inputLayersKey carries, in an action's context, where the local
// executor reports the layers it placed. A context value rather than
// an Observer argument: only the recording executor listens, and the
// decorators in between need not know.
type inputLayersKey struct{}

func withInputLayersListener(ctx context.Context, listen func([]cas.LayerUse)) context.Context {
	return context.WithValue(ctx, inputLayersKey{}, listen)
}

// reportInputLayers tells the listener (if any) which layers of the
// input root were cached and which were built.
func reportInputLayers(ctx context.Context, root *cas.InputRoot) {
	if listen, ok := ctx.Value(inputLayersKey{}).(func([]cas.LayerUse)); ok {
		listen(root.Layers)
	}
}
