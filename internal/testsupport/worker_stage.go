package testsupport

import "github.com/bitzel/bitzel-worker/proto/remoteworker"

// SynchronizeStage names the state a worker's Synchronize request
// reports ("idle", "started", "fetching_inputs", "running",
// "uploading_outputs", "completed"; "unknown" for anything else), for
// the cluster tests (worker/cluster and e2e) that wait for one.
func SynchronizeStage(request *remoteworker.SynchronizeRequest) string {
	switch state := request.GetCurrentState().GetWorkerState().(type) {
	case *remoteworker.CurrentState_Idle:
		return "idle"
	case *remoteworker.CurrentState_Executing_:
		switch state.Executing.GetExecutionState().(type) {
		case *remoteworker.CurrentState_Executing_Started:
			return "started"
		case *remoteworker.CurrentState_Executing_FetchingInputs:
			return "fetching_inputs"
		case *remoteworker.CurrentState_Executing_Running:
			return "running"
		case *remoteworker.CurrentState_Executing_UploadingOutputs:
			return "uploading_outputs"
		case *remoteworker.CurrentState_Executing_Completed:
			return "completed"
		}
	}
	return "unknown"
}
