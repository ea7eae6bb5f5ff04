package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
