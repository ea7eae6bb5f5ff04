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

// settledResources waits for in-flight work to wind down (streams
// closing, operations retiring) and returns the counts.
func settledResources(t *testing.T, s *server, baseFDs, baseGoroutines int) (int, int) {
	var fds, goroutines int
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		fds, goroutines = serverResources(t, s)
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

	fds, goroutines := settledResources(t, s, baseFDs, baseGoroutines)
	t.Logf("descriptors %d -> %d, goroutines %d -> %d", baseFDs, fds, baseGoroutines, goroutines)
	if fds > baseFDs+4 {
		t.Errorf("descriptors grew from %d to %d", baseFDs, fds)
	}
	if goroutines > baseGoroutines+10 {
		t.Errorf("goroutines grew from %d to %d", baseGoroutines, goroutines)
	}
}
