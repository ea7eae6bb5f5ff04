package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	bzclient "github.com/bitzel/bitzel-worker/client"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/worker/cluster/schedulertest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// hangingListener accepts connections and never answers: a CAS that is
// up but stuck.
func hangingListener(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		listener.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return listener.Addr().String()
}

func TestClusterWorkerFailsCleanlyWhenTheCASIsUnreachable(t *testing.T) {
	for _, cas := range []struct{ name, address string }{
		{"hanging", hangingListener(t)},
		{"refusing", freeAddress(t)},
	} {
		t.Run(cas.name, func(t *testing.T) {
			d, schedulerAddress := startSchedulerDouble(t)
			w := startClusterWorker(t, cas.address, schedulerAddress, map[string]string{"test": cas.name})
			action := &remoteexecution.Action{
				CommandDigest:   digestOf([]byte("a command the CAS will never hand out")),
				InputRootDigest: digestOf(nil),
				Timeout:         durationpb.New(3 * time.Second),
			}
			data, _ := proto.Marshal(action)
			actionDigest := digestOf(data)
			start := time.Now()
			d.Enqueue(&schedulertest.Task{ActionDigest: actionDigest, Action: action, DigestFunction: remoteexecution.DigestFunction_SHA256})
			response := waitForCompletion(t, d, actionDigest)
			elapsed := time.Since(start)
			if st := status.FromProto(response.Status); st.Code() != codes.Unavailable {
				t.Errorf("status %v, want UNAVAILABLE", st)
			}
			// The fetch may take as long as the action may run (at
			// least 10s), with retries; not for ever.
			if elapsed > 45*time.Second {
				t.Errorf("the worker took %v to give up", elapsed)
			}
			w.stop()
			w.waitExited(t)
		})
	}
}

func TestKillingServeMidActionLeavesNothingAndARetrySucceeds(t *testing.T) {
	mountsBefore := ownMounts(t)
	s := startServer(t)
	c := s.client()
	a := c.newAction(action{args: sh(`mkdir -p out && echo started > out/f && sleep 600`), outputFiles: []string{"out/f"}})
	stream := c.startExecute(context.Background(), a, false)
	waitForExecuting(t, stream)
	// EXECUTING is reported as the executor hands the action to the
	// sandbox runner, which may still be starting its sandbox (the
	// warm pool fills in the background at start-up).
	var sandboxes []int
	waitUntil(t, "the action's sandbox", func() bool {
		sandboxes = sandboxProcesses(t, s.cmd.Process.Pid)
		return len(sandboxes) >= 2
	})
	s.cmd.Process.Kill()
	<-s.exited
	// The client sees the server go away, not a hang: UNAVAILABLE
	// from the transport. A stream the server ended itself (which
	// Follow also reports as UNAVAILABLE, saying so) is not that.
	if _, err := bzclient.Follow(stream, nil); status.Code(err) != codes.Unavailable || strings.Contains(err.Error(), "stream ended") {
		t.Errorf("the client saw %v, want UNAVAILABLE", err)
	}
	// Every process of the server dies with it.
	waitUntil(t, "the sandboxes to die with the server", func() bool {
		for _, pid := range sandboxes {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				return false
			}
		}
		return true
	})
	reportMountChanges(t, filepath.Join(os.TempDir(), "bitzel-*"), mountsBefore, ownMounts(t))
	// A restart on the same data directory cleans up after the crash
	// and serves the retry.
	restarted := startServerIn(t, s.dataDir)
	defer restarted.stop()
	if entries, _ := os.ReadDir(s.dataDir + "/build"); len(entries) != 0 {
		t.Errorf("the crashed action's directory is left in the build directory: %v", entries)
	}
	for _, leftover := range []string{"/layers/tmp", "/files/tmp"} {
		if entries, _ := os.ReadDir(s.dataDir + leftover); len(entries) != 0 {
			t.Errorf("half-written cache entries left in %s: %d", leftover, len(entries))
		}
	}
	retry := startClientOn(t, restarted)
	b := retry.newAction(action{args: sh(`echo retried`)})
	response, _ := retry.execute(b, false)
	if got := string(retry.read(response.Result.GetStdoutDigest())); got != "retried\n" {
		t.Errorf("retry after the restart: %v %q", response.Status, got)
	}
}

// smallFileSystem returns a directory on a small file system of its
// own: a tmpfs the test mounts as root, or the one scripts/test.sh
// mounts for the ordinary user (BITZEL_SMALL_FS).
func smallFileSystem(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("BITZEL_SMALL_FS"); dir != "" {
		return dir
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs a small file system: run as root, or set BITZEL_SMALL_FS to a directory on a small tmpfs this user owns (scripts/test.sh does)")
	}
	dir, err := os.MkdirTemp("", "bitzel-small-fs-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m,mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		syscall.Unmount(dir, syscall.MNT_DETACH)
		os.Remove(dir)
	})
	return dir
}

func TestDiskFullIsResourceExhaustedAndTheWorkerRecovers(t *testing.T) {
	fs := smallFileSystem(t)
	dataDir, err := os.MkdirTemp(fs, "data-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dataDir, 0o755)
	defer fsutil.RemoveAll(dataDir)
	// The CAS file is sparse; the caches and the actions' upper
	// directories share the small file system.
	s := startServerIn(t, dataDir, "--cas-size", fmt.Sprint(32<<20))
	defer s.stop()
	c := s.client()
	writer := c.newAction(action{args: sh(`head -c 1m /dev/zero > big; echo $?`), outputFiles: []string{"big"}})
	filler := fs + "/filler"
	out, err := exec.Command("sh", "-c", fmt.Sprintf("head -c 200m /dev/zero > %s", filler)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "No space") {
		t.Fatalf("could not fill the file system: %v %s", err, out)
	}
	response, _ := c.execute(writer, false)
	if st := status.FromProto(response.Status); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "disk") {
		t.Errorf("with the disk full: status %v, exit %d; want RESOURCE_EXHAUSTED naming the disk", st, response.Result.GetExitCode())
	}
	// Space comes back: so does the worker, and nothing of the failed
	// action was cached.
	os.Remove(filler)
	if _, err := c.ac.GetActionResult(context.Background(), &remoteexecution.GetActionResultRequest{ActionDigest: writer}); status.Code(err) != codes.NotFound {
		t.Errorf("the failure was cached: %v", err)
	}
	result := c.run(action{args: sh(`echo recovered > out`), outputFiles: []string{"out"}})
	if got := string(c.read(result.OutputFiles[0].Digest)); got != "recovered\n" {
		t.Errorf("after space came back: %q", got)
	}
}
