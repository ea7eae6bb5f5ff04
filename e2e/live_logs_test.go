package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	bzclient "github.com/bitzel/bitzel-worker/client"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/longrunning"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gatedScript prints a first line on stdout, then waits until someone
// writes to the FIFO /tmp/gate (made by the script in its private
// /tmp), then prints the rest. The test opens the gate only after it
// has read the first line, so reading it proves that the output was
// read while the action was still running: the action cannot end
// before. marker is in argv, for the test to find the process.
func gatedScript(marker string) []string {
	return []string{"/bin/sh", "-c", `mkfifo /tmp/gate && echo "first line $0" && echo "first err" >&2 && read x </tmp/gate && echo "second line $x" && echo "second err" >&2`, marker}
}

// openGate finds the action's shell by its marker and writes "opened"
// into its FIFO through /proc/PID/root, the sandbox's own root.
func openGate(t *testing.T, marker string) {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte("\x00"+marker)) || !bytes.HasPrefix(cmdline, []byte("/bin/sh\x00")) {
			continue
		}
		// O_WRONLY on a FIFO waits for its reader: the script is
		// there, or about to be.
		f, err := os.OpenFile(fmt.Sprintf("/proc/%d/root/tmp/gate", pid), os.O_WRONLY, 0)
		if err != nil {
			t.Fatalf("open the action's gate: %v", err)
		}
		defer f.Close()
		if _, err := io.WriteString(f, "opened\n"); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no process of the action (marker %s) found", marker)
}

// readUntil reads from lines until one contains want, or fails after a
// minute.
func readUntil(t *testing.T, lines <-chan string, want string) []string {
	t.Helper()
	var got []string
	deadline := time.After(time.Minute)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the output ended before %q: %q", want, got)
			}
			got = append(got, line)
			if strings.Contains(line, want) {
				return got
			}
		case <-deadline:
			t.Fatalf("%q did not appear within a minute while the action ran (read %q)", want, got)
		}
	}
}

// followStream reads a ByteStream resource and sends its content line
// by line; errs gets the stream's end (nil at a clean end).
func followStream(ctx context.Context, c *client, name string) (<-chan string, <-chan error) {
	lines, errs := make(chan string, 100), make(chan error, 1)
	remote := c.remote()
	go func() {
		defer close(lines)
		var pending []byte
		errs <- remote.ReadResource(ctx, name, 0, func(chunk []byte) error {
			pending = append(pending, chunk...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					return nil
				}
				lines <- string(pending[:i])
				pending = pending[i+1:]
			}
		})
	}()
	return lines, errs
}

// TestLiveLogsReadWhileTheActionRuns: serve names the running action's
// stdout and stderr in ExecuteOperationMetadata, and a ByteStream Read
// of them returns the first lines before the action can end.
func TestLiveLogsReadWhileTheActionRuns(t *testing.T) {
	s := startServer(t)
	c := s.client()
	marker := "live-" + uuid.NewString()
	actionDigest := c.newAction(action{args: gatedScript(marker), env: map[string]string{"PATH": "/usr/bin:/bin"}, timeout: 2 * time.Minute})
	// Not the action's timeout: without live logs the wait for
	// their names would last as long.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := c.startExecute(ctx, actionDigest, true)
	var bare *longrunning.Operation
	op, err := bzclient.Await(stream, func(op *longrunning.Operation) bool {
		if bzclient.Metadata(op) == nil && bare == nil {
			bare = op
		}
		return bzclient.Metadata(op).GetStdoutStreamName() != ""
	})
	if err != nil {
		t.Fatalf("the operation ended without naming its live logs: %v\nserver:\n%s", err, s.logs())
	}
	if bare != nil {
		t.Fatalf("operation update without ExecuteOperationMetadata: %v", bare)
	}
	if op.Done {
		t.Fatalf("the operation completed without naming its live logs (it cannot complete before the test opens its gate): %v", op)
	}
	metadata := bzclient.Metadata(op)
	stdoutName, stderrName := metadata.StdoutStreamName, metadata.StderrStreamName
	if metadata.Stage != remoteexecution.ExecutionStage_EXECUTING {
		t.Errorf("stream names in stage %v", metadata.Stage)
	}
	if stderrName == "" || stderrName == stdoutName {
		t.Fatalf("stdout %q, stderr %q", stdoutName, stderrName)
	}
	stdoutLines, stdoutEnd := followStream(ctx, c, stdoutName)
	stderrLines, stderrEnd := followStream(ctx, c, stderrName)
	readUntil(t, stdoutLines, "first line "+marker)
	readUntil(t, stderrLines, "first err")
	openGate(t, marker)
	readUntil(t, stdoutLines, "second line opened")
	readUntil(t, stderrLines, "second err")
	for name, end := range map[string]<-chan error{stdoutName: stdoutEnd, stderrName: stderrEnd} {
		if err := <-end; err != nil {
			t.Errorf("reading %s: %v", name, err)
		}
	}
	response, _ := c.drain(stream)
	if st := status.FromProto(response.Status); st.Code() != codes.OK || response.Result.GetExitCode() != 0 {
		t.Fatalf("status %v, exit code %d", st, response.Result.GetExitCode())
	}
	if got, want := string(c.read(response.Result.StdoutDigest)), "first line "+marker+"\nsecond line opened\n"; got != want {
		t.Errorf("stdout in the result %q, want %q", got, want)
	}
	// The names end with the action; its logs are in the result.
	err = c.remote().ReadResource(context.Background(), stdoutName, 0, func([]byte) error { return nil })
	if status.Code(err) != codes.NotFound {
		t.Errorf("live log read after the action ended: %v, want NOT_FOUND", err)
	}
}

// TestSubmitShowsLiveOutput: `submit` prints a running task's output as
// it is written (the first line while the task waits for the test),
// and each byte once.
func TestSubmitShowsLiveOutput(t *testing.T) {
	s := startServer(t)
	marker := "submit-" + uuid.NewString()
	cmd := exec.Command(filepath.Join(binaries(t), "bitzel-worker"), append([]string{"submit", "--quiet", "--remote", "grpc://" + s.address,
		"--env", "PATH=/usr/bin:/bin", "--timeout", "2m", "--"}, gatedScript(marker)...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	scan := func(r io.Reader) <-chan string {
		lines := make(chan string, 100)
		go func() {
			defer close(lines)
			scanner := bufio.NewScanner(r)
			for scanner.Scan() {
				lines <- scanner.Text()
			}
		}()
		return lines
	}
	stdoutLines, stderrLines := scan(stdout), scan(stderr)
	if got := readUntil(t, stdoutLines, "first line "+marker); len(got) != 1 {
		t.Errorf("stdout before the gate: %q", got)
	}
	if got := readUntil(t, stderrLines, "first err"); len(got) != 1 {
		t.Errorf("stderr before the gate: %q", got)
	}
	openGate(t, marker)
	var rest, restErr []string
	for line := range stdoutLines {
		rest = append(rest, line)
	}
	for line := range stderrLines {
		restErr = append(restErr, line)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("submit: %v\nstderr: %q\nserver:\n%s", err, restErr, s.logs())
	}
	if len(rest) != 1 || rest[0] != "second line opened" {
		t.Errorf("stdout after the first line: %q, want only the second line", rest)
	}
	if len(restErr) != 1 || restErr[0] != "second err" {
		t.Errorf("stderr after the first line: %q, want only the second line", restErr)
	}
}
