package worker

import (
	"context"
	"reflect"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layers"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

type stagesExecutor struct{}

func (stagesExecutor) Execute(ctx context.Context, request *Request, observer Observer) *remoteexecution.ExecuteResponse {
	for _, s := range []Stage{StageStarted, StageFetchingInputs, StageRunning, StageUploadingOutputs} {
		observer(s)
	}
	return &remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{ExitCode: 3}}
}

type fakeRecorder struct {
	started   []*Request
	stages    []Stage
	responses []*remoteexecution.ExecuteResponse
	layers    []layers.LayerUse
}

func (r *fakeRecorder) ActionStarted(request *Request) ActionRecording {
	r.started = append(r.started, request)
	return r
}
func (r *fakeRecorder) StageChanged(stage Stage) { r.stages = append(r.stages, stage) }
func (r *fakeRecorder) InputLayersPlaced(layers []layers.LayerUse) {
	r.layers = append(r.layers, layers...)
}
func (r *fakeRecorder) ActionCompleted(response *remoteexecution.ExecuteResponse) {
	r.responses = append(r.responses, response)
}

func TestRecordingExecutorReportsStagesAndResponseAndStillTellsTheObserver(t *testing.T) {
	recorder := &fakeRecorder{}
	var observed []Stage
	request := &Request{}
	response := NewRecordingExecutor(stagesExecutor{}, recorder).Execute(context.Background(), request, func(s Stage) { observed = append(observed, s) })
	if len(recorder.started) != 1 || recorder.started[0] != request {
		t.Fatalf("started %v, want the request once", recorder.started)
	}
	if len(recorder.stages) != 4 || len(observed) != 4 {
		t.Fatalf("recorder saw stages %v, observer %v; want 4 each", recorder.stages, observed)
	}
	if len(recorder.responses) != 1 || recorder.responses[0] != response || response.Result.ExitCode != 3 {
		t.Fatalf("completed with %v, want the response", recorder.responses)
	}
}

func TestRequestMetadataComesFromTheCallOrTheSchedulersAuxiliaryMetadata(t *testing.T) {
	sent := &remoteexecution.RequestMetadata{ToolInvocationId: "inv", TargetId: "//a:b", ActionMnemonic: "Genrule", ActionId: "id"}
	data, err := proto.Marshal(sent)
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(requestMetadataKey, string(data)))
	if got := RequestMetadataFromContext(ctx); !proto.Equal(got, sent) {
		t.Errorf("from the call: %v, want %v", got, sent)
	}
	bad := metadata.NewIncomingContext(context.Background(), metadata.Pairs(requestMetadataKey, "\xff\xff"))
	if got := RequestMetadataFromContext(bad); got != nil {
		t.Errorf("malformed metadata gave %v, want nil", got)
	}
	if got := RequestMetadataFromContext(context.Background()); got != nil {
		t.Errorf("no metadata gave %v, want nil", got)
	}
	forwarded, err := anypb.New(sent)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := anypb.New(&remoteexecution.Digest{Hash: "x"})
	request := &Request{AuxiliaryMetadata: []*anypb.Any{other, forwarded}}
	if got := request.ClientRequestMetadata(); !proto.Equal(got, sent) {
		t.Errorf("from auxiliary metadata: %v, want %v", got, sent)
	}
	own := &remoteexecution.RequestMetadata{TargetId: "//own"}
	request.RequestMetadata = own
	if got := request.ClientRequestMetadata(); got != own {
		t.Errorf("with the call's own: %v, want it", got)
	}
}

type layersExecutor struct{ layers []layers.LayerUse }

func (e layersExecutor) Execute(ctx context.Context, request *Request, observer Observer) *remoteexecution.ExecuteResponse {
	reportInputLayers(ctx, &layers.InputRoot{Layers: e.layers})
	return &remoteexecution.ExecuteResponse{}
}

func TestRecordingExecutorHearsWhichInputLayersThePlacementUsed(t *testing.T) {
	recorder := &fakeRecorder{}
	layers := []layers.LayerUse{{Path: ".", Built: true}, {Path: "sysroot"}}
	NewRecordingExecutor(layersExecutor{layers}, recorder).Execute(context.Background(), &Request{}, NoopObserver)
	if !reflect.DeepEqual(recorder.layers, layers) {
		t.Fatalf("recorder heard layers %+v, want %+v", recorder.layers, layers)
	}
	// Without a recording executor around it nobody listens, and
	// reporting does nothing.
	layersExecutor{layers}.Execute(context.Background(), &Request{}, NoopObserver)
}
