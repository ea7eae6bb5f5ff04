package worker

import (
	"strings"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// FuzzCommandAndAction feeds the checks an Execute makes of a client's
// Command and Action before anything runs (localExecutor.check: the
// arguments, the timeout, the platform, the working directory and
// output paths) with arbitrary messages. Whatever a client sends, none
// panics, none answers INTERNAL, and what they all accept is something
// execve(2) takes: no NUL, no string or list over the kernel's limits. Run with
//
//	go test -run XXX -fuzz FuzzCommandAndAction -fuzztime 30s ./worker
//
// The committed corpus (testdata/fuzz) also runs as a plain test.
func FuzzCommandAndAction(f *testing.F) {
	for _, seed := range []struct {
		command *remoteexecution.Command
		action  *remoteexecution.Action
	}{
		{&remoteexecution.Command{Arguments: []string{"/bin/true"}}, &remoteexecution.Action{}},
		{&remoteexecution.Command{}, &remoteexecution.Action{Timeout: durationpb.New(-time.Second)}},
		{&remoteexecution.Command{Arguments: []string{"/bin/echo", "a\x00b"}, WorkingDirectory: "../x"}, &remoteexecution.Action{Timeout: &durationpb.Duration{Nanos: -1}}},
		{&remoteexecution.Command{Arguments: []string{"sh"}, EnvironmentVariables: []*remoteexecution.Command_EnvironmentVariable{{Name: "A=B", Value: "c"}, {Name: "", Value: ""}}}, &remoteexecution.Action{Timeout: durationpb.New(48 * time.Hour)}},
		{&remoteexecution.Command{Arguments: []string{"x"}, OutputPaths: []string{"/abs", "", strings.Repeat("n", 300)}, OutputFiles: []string{"a/../.."}}, &remoteexecution.Action{Platform: &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{{Name: "OSFamily", Value: "Windows"}}}}},
		{&remoteexecution.Command{Arguments: []string{strings.Repeat("a", maxArgStrlen)}, OutputDirectories: []string{""}}, &remoteexecution.Action{}},
	} {
		c, _ := proto.Marshal(seed.command)
		a, _ := proto.Marshal(seed.action)
		f.Add(c, a)
	}
	e := &localExecutor{
		options:  LocalExecutorOptions{DefaultTimeout: time.Minute, MaximumTimeout: time.Hour},
		platform: newPlatformMatcher(PlatformOffer{}),
	}
	f.Fuzz(func(t *testing.T, commandBytes, actionBytes []byte) {
		var command remoteexecution.Command
		var action remoteexecution.Action
		if proto.Unmarshal(commandBytes, &command) != nil || proto.Unmarshal(actionBytes, &action) != nil {
			return // refused by the protobuf layer, as gRPC would
		}
		_, err := e.check(&action, &command, false)
		if err != nil {
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument && st.Code() != codes.FailedPrecondition {
				t.Fatalf("%v: %v, want INVALID_ARGUMENT or FAILED_PRECONDITION", st.Code(), st.Message())
			}
			if len(st.Message()) > 8192 {
				t.Fatalf("message of %d bytes", len(st.Message()))
			}
			return
		}
		total := 0
		for _, s := range append(append([]string{}, command.Arguments...), environment(&command)...) {
			if strings.IndexByte(s, 0) >= 0 || len(s) >= maxArgStrlen {
				t.Fatalf("accepted an execve string the kernel refuses: %.64q (%d bytes)", s, len(s))
			}
			total += len(s) + 1 + 8
		}
		if total > argMax() {
			t.Fatalf("accepted %d bytes of arguments and environment, over ARG_MAX %d", total, argMax())
		}
	})
}
