package e2e

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestMisbehavingActionsAreContained runs actions that attack the
// worker, the host or their own limits, through `serve`: each must be
// contained and reported, and the worker must go on serving.
// Long on purpose: one table of misbehaviours against one server.
func TestMisbehavingActionsAreContained(t *testing.T) {
	s := startServer(t, "--pids-limit", "64", "--memory-limit", fmt.Sprint(64<<20), "--tmp-size", fmt.Sprint(16<<20), "--output-limit", fmt.Sprint(1<<20))
	// Everything the worker mounts on the host is under its data
	// directory (sandbox state, build directories); the rest of the
	// machine's mounts are not this test's.
	mountsBefore := mountsUnder(t, s.dataDir)
	c := s.client()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	port := listener.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			conn.Write([]byte("reached\n"))
			conn.Close()
		}
	}()

	t.Run("fork bomb", func(t *testing.T) {
		response, _ := c.execute(c.newAction(action{args: []string{"/bin/bash", "-c", `bomb() { bomb | bomb & }; bomb; sleep 2; echo survived`}, timeout: 10 * time.Second}), false)
		if st := status.FromProto(response.Status); st.Code() != codes.OK && st.Code() != codes.DeadlineExceeded {
			t.Errorf("status %v", st)
		}
	})
	t.Run("memory hog", func(t *testing.T) {
		response, _ := c.execute(c.newAction(action{args: sh(`head -c 300m /dev/zero | tail -c 300m > /dev/null`)}), false)
		if os.Geteuid() == 0 {
			// Cgroups (v1 here) enforce the limit.
			if response.Result.GetExitCode() == 0 || !strings.Contains(response.Message, "memory limit") {
				t.Errorf("a 300 MB allocation under a 64 MiB limit: exit %d, message %q", response.Result.GetExitCode(), response.Message)
			}
		} else if !strings.Contains(s.logs(), "memory limits are not enforced") {
			// Without delegated cgroups the worker must say so.
			t.Errorf("rootless worker without cgroups did not log that memory limits are off:\n%s", s.logs())
		}
	})
	t.Run("fill tmp", func(t *testing.T) {
		result := c.run(action{args: sh(`head -c 64m /dev/zero > /tmp/fill 2>/dev/null; echo rc=$?; df -k /tmp | tail -1`)})
		if out := string(c.read(result.StdoutDigest)); !strings.Contains(out, "rc=1") {
			t.Errorf("64 MiB fit in a 16 MiB /tmp: %s", out)
		}
	})
	t.Run("10 GB of stdout", func(t *testing.T) {
		response, _ := c.execute(c.newAction(action{args: sh(`head -c 10G /dev/zero; echo done >&2`), timeout: 5 * time.Minute}), false)
		if response.Result.GetStdoutDigest().GetSizeBytes() != 1<<20 || !strings.Contains(response.Message, "discarded") {
			t.Errorf("stdout of %d bytes under a 1 MiB cap, message %q", response.Result.GetStdoutDigest().GetSizeBytes(), response.Message)
		}
		if got := string(c.read(response.Result.GetStderrDigest())); got != "done\n" {
			t.Errorf("the action did not finish: stderr %q", got)
		}
	})
	t.Run("host paths", func(t *testing.T) {
		result := c.run(action{args: sh(fmt.Sprintf(`
			for p in /usr/bitzel-abuse /etc/bitzel-abuse /bitzel-abuse /opt/bitzel-abuse; do echo x > $p 2>/dev/null && echo wrote $p; done
			for p in /root /home /var %s; do test -e $p && echo sees $p; done
			mount -t tmpfs none /tmp 2>/dev/null && echo mounted
			kill -9 %d 2>/dev/null && echo killed-worker
			strace -o /dev/null -p %d 2>/dev/null && echo traced-worker
			test -x /usr/bin/strace || echo no-strace
			test -e /proc/%d && echo sees-worker
			bash -c 'echo > /dev/tcp/127.0.0.1/%d' 2>/dev/null && echo reached-host
			true`, s.dataDir, s.cmd.Process.Pid, s.cmd.Process.Pid, s.cmd.Process.Pid, port))})
		if out := string(c.read(result.StdoutDigest)); out != "" {
			t.Errorf("the action got out:\n%s", out)
		}
		for _, p := range []string{"/usr/bitzel-abuse", "/etc/bitzel-abuse", "/opt/bitzel-abuse"} {
			if _, err := os.Stat(p); err == nil {
				os.Remove(p)
				t.Errorf("%s was created on the host", p)
			}
		}
	})
	t.Run("kill -9 -1", func(t *testing.T) {
		result := c.run(action{args: []string{"/bin/bash", "-c", `sleep 100 & kill -9 -1; echo still-here`}})
		if got := string(c.read(result.StdoutDigest)); got != "still-here\n" {
			t.Errorf("stdout %q", got)
		}
	})

	// The worker is unaffected: it still runs actions, and nothing of
	// the above is left on the host.
	result := c.run(action{args: sh(`echo fine`)})
	if got := string(c.read(result.StdoutDigest)); got != "fine\n" {
		t.Errorf("after the abuse: %q", got)
	}
	expectSameMounts(t, s.dataDir, mountsBefore)
	if procs := sandboxProcesses(t, s.cmd.Process.Pid); len(procs) > 1+2*4 {
		t.Errorf("%d sandbox processes left (a launcher and warm sandboxes expected)", len(procs))
	}
}
