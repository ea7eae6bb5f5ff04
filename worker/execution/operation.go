package execution

import (
	"context"
	"sync"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/genproto/googleapis/longrunning"
	"google.golang.org/protobuf/types/known/anypb"
)

// operation is one execution as clients of the Execution service see
// it: a name they can wait on, a stage, and eventually a response.
// Several Execute calls of the same action share one.
type operation struct {
	name           string
	actionDigest   digest.Digest
	digestFunction digest.Function

	mu       sync.Mutex
	stage    remoteexecution.ExecutionStage_Value
	response *remoteexecution.ExecuteResponse
	// stdoutStream and stderrStream name the live logs while the
	// action runs (see live_logs.go), "" otherwise.
	stdoutStream, stderrStream string
	// changed is closed and replaced at every change, waking every
	// stream that waits on the operation.
	changed chan struct{}
}

func newOperation(name string, actionDigest digest.Digest) *operation {
	return &operation{
		name:           name,
		actionDigest:   actionDigest,
		digestFunction: actionDigest.GetDigestFunction(),
		stage:          remoteexecution.ExecutionStage_QUEUED,
		changed:        make(chan struct{}),
	}
}

func (o *operation) setStage(stage remoteexecution.ExecutionStage_Value) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.response != nil || o.stage == stage {
		return
	}
	o.stage = stage
	close(o.changed)
	o.changed = make(chan struct{})
}

func (o *operation) setStreamNames(stdout, stderr string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stdoutStream, o.stderrStream = stdout, stderr
	close(o.changed)
	o.changed = make(chan struct{})
}

func (o *operation) complete(response *remoteexecution.ExecuteResponse) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stage = remoteexecution.ExecutionStage_COMPLETED
	o.response = response
	close(o.changed)
	o.changed = make(chan struct{})
}

// snapshot returns the operation as a longrunning.Operation, and a
// channel that is closed at the next change.
func (o *operation) snapshot() (*longrunning.Operation, <-chan struct{}, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	metadata, _ := anypb.New(&remoteexecution.ExecuteOperationMetadata{
		Stage:          o.stage,
		ActionDigest:   o.actionDigest.GetProto(),
		DigestFunction: o.digestFunction.GetEnumValue(),
		// Only while they can be read: the logs of a completed
		// action are in its ActionResult.
		StdoutStreamName: o.runningOnly(o.stdoutStream),
		StderrStreamName: o.runningOnly(o.stderrStream),
	})
	op := &longrunning.Operation{Name: o.name, Metadata: metadata}
	if o.response != nil {
		response, _ := anypb.New(o.response)
		op.Done = true
		op.Result = &longrunning.Operation_Response{Response: response}
	}
	return op, o.changed, o.response != nil
}

func (o *operation) runningOnly(name string) string {
	if o.response != nil {
		return ""
	}
	return name
}

// stream sends the operation's state now and at every change until it
// is done. The operation goes on if the client goes away.
func (o *operation) stream(ctx context.Context, send func(*longrunning.Operation) error) error {
	for {
		op, changed, done := o.snapshot()
		if err := send(op); err != nil || done {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
