package worker

import (
	"context"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layers"
)

// ActionRecorder is told of every action an executor runs, so that a
// status page can show what runs now and what ran recently. Its
// methods are called on the action's own goroutine and must not block.
type ActionRecorder interface {
	ActionStarted(request *Request) ActionRecording
}

// ActionRecording follows one action from start to completion.
type ActionRecording interface {
	StageChanged(stage Stage)
	// InputLayersPlaced is told which layers the input root was
	// placed from, and which of them this action built.
	InputLayersPlaced(layers []layers.LayerUse)
	ActionCompleted(response *remoteexecution.ExecuteResponse)
}

type recordingExecutor struct {
	Executor
	recorder ActionRecorder
}

// NewRecordingExecutor reports every action, its stage changes and its
// response to recorder. It sits outside the caching executor so that
// a failure to write the Action Cache is recorded as the client sees it.
func NewRecordingExecutor(base Executor, recorder ActionRecorder) Executor {
	return &recordingExecutor{Executor: base, recorder: recorder}
}

func (e *recordingExecutor) Execute(ctx context.Context, request *Request, observer Observer) *remoteexecution.ExecuteResponse {
	recording := e.recorder.ActionStarted(request)
	ctx = withInputLayersListener(ctx, recording.InputLayersPlaced)
	response := e.Executor.Execute(ctx, request, func(stage Stage) {
		recording.StageChanged(stage)
		observer(stage)
	})
	recording.ActionCompleted(response)
	return response
}
