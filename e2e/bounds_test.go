package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestOutputsBeyondTheBudgetAreRefusedAtOnce: outputs are checked
// against the per-action budget from stat, before a byte is hashed, and
// the action fails with a status a client does not retry.
func TestOutputsBeyondTheBudgetAreRefusedAtOnce(t *testing.T) {
	s := startServer(t, "--output-budget-bytes", fmt.Sprint(1<<30), "--output-budget-files", "100")
	c := s.client()
	t.Run("sparse 200 GiB file", func(t *testing.T) {
		response, _ := c.execute(c.newAction(action{
			args:        sh(`mkdir -p out && truncate -s 200G out/huge`),
			outputFiles: []string{"out/huge"},
			timeout:     30 * time.Second,
		}), false)
		st := status.FromProto(response.Status)
		if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "out/huge") || !strings.Contains(st.Message(), fmt.Sprint(200<<30)) {
			t.Errorf("status %v, want RESOURCE_EXHAUSTED naming out/huge and its size", st)
		}
	})
	t.Run("many files", func(t *testing.T) {
		response, _ := c.execute(c.newAction(action{
			args:       sh(`mkdir -p out && cd out && for i in $(seq 500); do : > f$i; done`),
			outputDirs: []string{"out"},
		}), false)
		st := status.FromProto(response.Status)
		if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "limit of 100") {
			t.Errorf("status %v, want RESOURCE_EXHAUSTED naming the limit of 100", st)
		}
	})
	t.Run("deeper than PATH_MAX", func(t *testing.T) {
		response, _ := c.execute(c.newAction(action{
			args:       sh(`mkdir -p out && cd out && d=$(printf 'd%.0s' $(seq 200)) && for i in $(seq 40); do mkdir $d && cd $d; done`),
			outputDirs: []string{"out"},
		}), false)
		st := status.FromProto(response.Status)
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "PATH_MAX") || len(st.Message()) > 1000 {
			t.Errorf("status %v (%d bytes), want a short INVALID_ARGUMENT naming PATH_MAX", st.Code(), len(st.Message()))
		}
	})
	// The worker goes on serving.
	if got := string(c.read(c.run(action{args: sh(`echo fine`)}).StdoutDigest)); got != "fine\n" {
		t.Errorf("stdout %q", got)
	}
}

// TestResultAfterALimitKillIsNotCached: the shell exits 0 although a
// limit stopped part of its work: as root, the kernel OOM-kills its
// child under the v1 memory cgroup; rootless (no delegated cgroup on
// this machine, so no memory limit to hit), its write fills the disk
// budget. The result is reported, says why it is not cached, and is
// not written to the Action Cache.
func TestResultAfterALimitKillIsNotCached(t *testing.T) {
	script, limit, wantCode := `head -c 100m /dev/zero > big; echo survived; exit 0`, "disk budget", codes.ResourceExhausted
	args := []string{"--disk-budget", fmt.Sprint(32 << 20)}
	if os.Geteuid() == 0 {
		script, limit, wantCode = `head -c 300m /dev/zero | tail -c 300m > /dev/null; echo survived; exit 0`, "memory limit", codes.OK
		args = []string{"--memory-limit", fmt.Sprint(64 << 20)}
	}
	s := startServer(t, args...)
	c := s.client()
	a := c.newAction(action{args: sh(script)})
	response, _ := c.execute(a, false)
	if st := status.FromProto(response.Status); st.Code() != wantCode || response.Result.GetExitCode() != 0 {
		t.Fatalf("status %v, exit %d: want %v and exit 0", st, response.Result.GetExitCode(), wantCode)
	}
	if !strings.Contains(response.Message, limit) || !strings.Contains(response.Message, "not written to the Action Cache") {
		t.Errorf("message %q", response.Message)
	}
	found := false
	for _, a := range response.Result.GetExecutionMetadata().GetAuxiliaryMetadata() {
		var s structpb.Struct
		if a.UnmarshalTo(&s) == nil && strings.Contains(s.Fields["not_cached_because"].GetStringValue(), limit) {
			found = true
		}
	}
	if !found {
		t.Errorf("no auxiliary metadata says why the result is not cached: %v", response.Result.GetExecutionMetadata().GetAuxiliaryMetadata())
	}
	if _, err := c.ac.GetActionResult(context.Background(), &remoteexecution.GetActionResultRequest{ActionDigest: a}); status.Code(err) != codes.NotFound {
		t.Errorf("GetActionResult: %v, want NOT_FOUND", err)
	}
	if again, _ := c.execute(a, false); again.CachedResult {
		t.Error("a second Execute was served the limit-affected result from the cache")
	}
}

// TestDiskBudgetStopsExecRootWritesAsTheyHappen: a write past the
// budget fails inside the action (ENOSPC), the action fails with
// RESOURCE_EXHAUSTED naming the budget, nothing is cached, and an
// action within its budget, before and after, is unaffected.
func TestDiskBudgetStopsExecRootWritesAsTheyHappen(t *testing.T) {
	s := startServer(t, "--disk-budget", fmt.Sprint(32<<20))
	c := s.client()
	within := c.run(action{args: sh(`head -c 16m /dev/zero > part && echo ok`), outputFiles: []string{"part"}})
	if len(within.OutputFiles) != 1 || within.OutputFiles[0].Digest.SizeBytes != 16<<20 {
		t.Fatalf("16 MiB within a 32 MiB budget: %v", within.OutputFiles)
	}
	a := c.newAction(action{args: sh(`head -c 100m /dev/zero > big; echo rc=$?; exit 0`), outputFiles: []string{"big"}})
	response, _ := c.execute(a, false)
	st := status.FromProto(response.Status)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), fmt.Sprintf("disk budget of %d bytes", 32<<20)) {
		t.Errorf("status %v, want RESOURCE_EXHAUSTED naming the disk budget", st)
	}
	if out := string(c.read(response.Result.GetStdoutDigest())); !strings.Contains(out, "rc=1") {
		t.Errorf("the write past the budget did not fail inside the action: %q", out)
	}
	if _, err := c.ac.GetActionResult(context.Background(), &remoteexecution.GetActionResultRequest{ActionDigest: a}); status.Code(err) != codes.NotFound {
		t.Errorf("GetActionResult: %v, want NOT_FOUND", err)
	}
	after := c.run(action{args: sh(`head -c 16m /dev/zero > part2 && echo ok`), outputFiles: []string{"part2"}})
	if len(after.OutputFiles) != 1 || after.OutputFiles[0].Digest.SizeBytes != 16<<20 {
		t.Fatalf("after an action filled its budget: %v", after.OutputFiles)
	}
}
