package worker

import (
	"bytes"
	"context"
	"log"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/sandbox"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

type fixedResponseExecutor struct {
	Executor
	response *remoteexecution.ExecuteResponse
}

func (e fixedResponseExecutor) Execute(context.Context, *Request, Observer) *remoteexecution.ExecuteResponse {
	return e.response
}

// A failed action whose environment has no PATH says so, in the
// response's message and in the worker's log line.
func TestFailedActionWithoutPATHIsVisibleInTheLog(t *testing.T) {
	failed := &sandbox.Result{ExitCode: 1}
	message := describeRun(failed, sandbox.Limits{}, 0, nil)
	if !strings.Contains(message, "no PATH (0 variables") {
		t.Errorf("failed without PATH: message %q", message)
	}
	if m := describeRun(failed, sandbox.Limits{}, 0, []string{"PATH=/usr/bin:/bin"}); m != "" {
		t.Errorf("failed with PATH: message %q", m)
	}
	if m := describeRun(&sandbox.Result{}, sandbox.Limits{}, 0, nil); m != "" {
		t.Errorf("succeeded without PATH: message %q", m)
	}

	var logged bytes.Buffer
	executor := NewLoggingExecutor(fixedResponseExecutor{response: &remoteexecution.ExecuteResponse{
		Result:  &remoteexecution.ActionResult{ExitCode: 1},
		Message: message,
	}}, log.New(&logged, "", 0))
	request := &Request{ActionDigest: digest.MustNewDigest("", remoteexecution.DigestFunction_SHA256, strings.Repeat("0", 64), 1)}
	executor.Execute(context.Background(), request, func(Stage) {})
	if !strings.Contains(logged.String(), "exit 1 (the action's environment has no PATH") {
		t.Errorf("log line %q does not show the empty environment", logged.String())
	}
}
