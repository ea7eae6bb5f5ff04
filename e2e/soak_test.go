package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/internal/procfs"
)

var goroutinesRE = regexp.MustCompile(`(?m)^go_goroutines (\d+)`)

// serverResources counts the server's open descriptors and goroutines.
func serverResources(t *testing.T, s *server) (fds, goroutines int) {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	_, body := httpGet(t, "http://"+s.metricsAddr+"/metrics")
	m := goroutinesRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no go_goroutines in /metrics")
	}
	goroutines, _ = strconv.Atoi(m[1])
	return len(entries), goroutines
}

// sandboxDescriptors is what serve holds per sandbox (each PID 1's
// config pipe and control socket): a sandbox serves one action after
// another, and the pool keeps up to two per slot between actions.
const sandboxDescriptors = 2

// pooledSandboxes counts serve's sandboxes' PID 1s.
func pooledSandboxes(t *testing.T, s *server) int {
	n := 0
	for _, pid := range sandboxProcesses(t, s.cmd.Process.Pid) {
		if procfs.Name(pid) == "bitzel-sandbox-init" {
			n++
		}
	}
	return n
}

// settledResources waits for in-flight work to wind down (streams
// closing, operations retiring) and returns the counts, the
// descriptors without those of sandboxes the pool holds beyond
// baseSandboxes.
func settledResources(t *testing.T, s *server, baseFDs, baseGoroutines, baseSandboxes int) (int, int) {
	var fds, goroutines int
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		fds, goroutines = serverResources(t, s)
		fds -= sandboxDescriptors * max(pooledSandboxes(t, s)-baseSandboxes, 0)
		if fds <= baseFDs+4 && goroutines <= baseGoroutines+10 {
			break
		}
	}
	return fds, goroutines
}

func TestThousandConcurrentStreamsAndTenThousandActionsLeakNothing(t *testing.T) {
	s := startServer(t)
	c := s.client()
	input := c.tree(map[string]entry{"in": {content: "x"}})
	warm := c.newAction(action{args: []string{"/bin/true"}, input: input})
	c.execute(warm, true)
	time.Sleep(500 * time.Millisecond)
	baseFDs, baseGoroutines := serverResources(t, s)
	baseSandboxes := pooledSandboxes(t, s)
	if baseSandboxes == 0 {
		t.Fatal("no sandbox of serve found: the descriptor count cannot tell them from a leak")
	}

	// 1,000 Execute streams at once, for 1,000 distinct actions.
	const concurrent = 1000
	digests := make([]*remoteexecution.Digest, concurrent)
	for i := range digests {
		digests[i] = c.newAction(action{args: sh(fmt.Sprintf(`echo %d`, i)), input: input})
	}
	var failures atomic.Int64
	var wg sync.WaitGroup
	for i := range digests {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			response, err := c.tryExecute(context.Background(), digests[i], false)
			if err != nil || response.Status.GetCode() != 0 || response.Result.GetExitCode() != 0 {
				failures.Add(1)
			}
		}(i)
	}
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d concurrent executions failed", n, concurrent)
	}

	// 10,000 actions, each run (skip_cache_lookup), by 8 clients one
	// after another.
	const sequential = 10000
	var next atomic.Int64
	failures.Store(0)
	one := c.newAction(action{args: []string{"/bin/true"}, input: input, doNotCache: true})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= sequential {
				// Done is enough: the action's own failure is not
				// what this counts.
				if _, err := c.tryExecute(context.Background(), one, true); err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d sequential executions failed", n, sequential)
	}

	fds, goroutines := settledResources(t, s, baseFDs, baseGoroutines, baseSandboxes)
	t.Logf("descriptors %d -> %d (not counting sandboxes, %d -> %d), goroutines %d -> %d", baseFDs, fds, baseSandboxes, pooledSandboxes(t, s), baseGoroutines, goroutines)
	if fds > baseFDs+4 {
		t.Errorf("descriptors grew from %d to %d", baseFDs, fds)
	}
	if goroutines > baseGoroutines+10 {
		t.Errorf("goroutines grew from %d to %d", baseGoroutines, goroutines)
	}
}
