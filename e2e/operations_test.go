package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	bzclient "github.com/bitzel/bitzel-worker/client"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"google.golang.org/genproto/googleapis/longrunning"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestIdenticalInFlightExecutionsAreMerged(t *testing.T) {
	c := startServer(t).client()
	// The action records each run; merged executions run it once.
	a := c.newAction(action{args: sh(`sleep 1; date +%s%N > out`), outputFiles: []string{"out"}})
	const n = 5
	names := make([]string, n)
	outs := make([]string, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			response, ops := c.execute(a, false)
			names[i] = ops[len(ops)-1].Name
			outs[i] = string(c.read(response.Result.OutputFiles[0].Digest))
		}(i)
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if names[i] != names[0] || outs[i] != outs[0] {
			t.Errorf("execution %d: operation %s output %q; execution 0: %s %q", i, names[i], outs[i], names[0], outs[0])
		}
	}
}

func TestWaitExecutionAfterReconnect(t *testing.T) {
	s := startServer(t)
	c := s.client()
	a := c.newAction(action{args: sh(`sleep 2; echo finished`)})
	ctx, cancel := context.WithCancel(context.Background())
	stream := c.startExecute(ctx, a, false)
	// The first update, whatever it is, names the operation.
	first, err := bzclient.Await(stream, func(*longrunning.Operation) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	// The client goes away mid-action...
	cancel()
	// ... and comes back on a new connection.
	c2 := startClientOn(t, s)
	wait, err := c2.remote().StartWaitExecution(context.Background(), first.Name)
	if err != nil {
		t.Fatal(err)
	}
	response, ops := c2.drain(wait)
	if ops[len(ops)-1].Name != first.Name {
		t.Errorf("WaitExecution returned operation %s, want %s", ops[len(ops)-1].Name, first.Name)
	}
	if got := string(c2.read(response.Result.GetStdoutDigest())); got != "finished\n" {
		t.Errorf("stdout %q, status %v", got, response.Status)
	}
	// Unknown names are NOT_FOUND.
	_, err = c2.remote().WaitExecution(context.Background(), "no-such-operation", nil, nil)
	if status.Code(err) != codes.NotFound {
		t.Errorf("WaitExecution of an unknown name: %v", err)
	}
}

func TestTwoHundredConcurrentExecuteStreams(t *testing.T) {
	c := startServer(t).client()
	const n = 200
	digests := make([]*remoteexecution.Digest, n)
	for i := range digests {
		digests[i] = c.newAction(action{args: sh(fmt.Sprintf(`echo %d > out`, i)), outputFiles: []string{"out"}})
	}
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range digests {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			response, err := c.tryExecute(context.Background(), digests[i], false)
			if err != nil {
				errs <- fmt.Sprintf("action %d: %v", i, err)
				return
			}
			if response.Status.GetCode() != 0 || len(response.Result.GetOutputFiles()) != 1 {
				errs <- fmt.Sprintf("action %d: %v", i, response)
				return
			}
			if got := strings.TrimSpace(string(c.read(response.Result.OutputFiles[0].Digest))); got != fmt.Sprint(i) {
				errs <- fmt.Sprintf("action %d: output %q", i, got)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestShutdownLeavesNoMountsOrProcesses(t *testing.T) {
	mountsBefore := ownMounts(t)
	s := startServer(t)
	c := s.client()
	a := c.newAction(action{args: sh(`sleep 600`)})
	stream := c.startExecute(context.Background(), a, false)
	waitForExecuting(t, stream)
	// The server's sandboxes: the running action's and the warm ones
	// (EXECUTING may come before the action's sandbox is started).
	var ours []int
	waitUntil(t, "the server's launcher and sandboxes while an action runs", func() bool {
		ours = sandboxProcesses(t, s.cmd.Process.Pid)
		return len(ours) >= 2
	})
	start := time.Now()
	s.cmd.Process.Signal(os.Interrupt)
	time.Sleep(500 * time.Millisecond)
	// A second signal cancels running actions without waiting out
	// the grace period.
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(90 * time.Second):
		t.Fatal("serve did not exit")
	}
	if elapsed := time.Since(start); elapsed > 20*time.Second {
		t.Errorf("stopping took %v despite the second signal", elapsed)
	}
	reportMountChanges(t, filepath.Join(os.TempDir(), "bitzel-*"), mountsBefore, ownMounts(t))
	for _, pid := range ours {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			t.Errorf("sandbox process %d outlived the server: %s", pid, status)
		}
	}
	// The client saw the action end with an error, not a hang.
	bzclient.Follow(stream, nil)
}

func TestServeExitsEvenIfItsDataDirectoryIsGone(t *testing.T) {
	s := startServer(t)
	c := s.client()
	c.run(action{args: []string{"/bin/true"}})
	// Someone deletes the data directory under the running worker;
	// the local store can then never write its state again.
	fsutil.RemoveAll(s.dataDir)
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not exit after SIGINT:\n%s", s.logs())
	}
}
