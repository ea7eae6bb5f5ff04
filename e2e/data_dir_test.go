package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// A second serve on a running one's data directory exits non-zero
// naming the holder's pid, and the first one's running action still
// returns its outputs.
func TestSecondServeOnOneDataDirectoryIsRefused(t *testing.T) {
	s := startServer(t)
	c := s.client()
	a := c.newAction(action{args: sh(`mkdir -p out && echo started > out/started && sleep 3 && echo done > out/f`),
		outputFiles: []string{"out/f"}})
	stream := c.startExecute(context.Background(), a, false)
	waitForExecuting(t, stream)

	second := exec.Command(filepath.Join(binaries(t), "bitzel-worker"), "serve", "--listen", "127.0.0.1:0",
		"--metrics-listen", "", "--data-dir", s.dataDir)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = second.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		second.Process.Kill()
		<-done
		t.Fatalf("the second serve did not exit:\n%s", out)
	}
	if err == nil {
		t.Errorf("the second serve exited 0:\n%s", out)
	}
	if want := fmt.Sprintf("pid %d", s.cmd.Process.Pid); !strings.Contains(string(out), want) {
		t.Errorf("the second serve's message does not name the holder (%s):\n%s", want, out)
	}
	if lines := strings.Count(strings.TrimSpace(string(out)), "\n"); lines > 0 {
		t.Errorf("the second serve printed more than one line:\n%s", out)
	}

	response, _ := c.drain(stream)
	if response.Result.GetExitCode() != 0 || len(response.Result.GetOutputFiles()) != 1 {
		t.Fatalf("the first serve's action lost its outputs: %v\n%s", response, s.logs())
	}
	if got := string(c.read(response.Result.OutputFiles[0].Digest)); got != "done\n" {
		t.Errorf("output: %q", got)
	}
}

// An input whose client asks for mode 0666 is 0666 to the action, but
// no other host user can reach its cached inode (or anything else in
// the data directory) to read or change it.
func TestHostUsersCannotReachTheCaches(t *testing.T) {
	s := startServer(t)
	c := s.client()
	content := []byte("cached content\n")
	dir := &remoteexecution.Directory{Files: []*remoteexecution.FileNode{{
		Name: "open", Digest: c.upload(content)[0],
		NodeProperties: &remoteexecution.NodeProperties{UnixMode: wrapperspb.UInt32(0o666)},
	}}}
	input := c.uploadProto(&remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{{Name: "in", Digest: c.uploadProto(dir)}}})
	result := c.run(action{args: sh(`stat -c %a in/open`), input: input})
	if got := string(c.read(result.StdoutDigest)); got != "666\n" {
		t.Fatalf("the action sees mode %q, want 666", got)
	}

	info, err := os.Stat(s.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		// Rootless there are no other ids to try: the actions'
		// root is our own uid, so the directory is ours alone.
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("rootless data directory has mode %v, want no access for group and others", info.Mode())
		}
		return
	}
	// As root: try every path as nobody, who is neither the worker,
	// nor an id the sandboxes are mapped to.
	var paths []string
	cached := 0
	filepath.WalkDir(s.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			paths = append(paths, p)
			if info, err := d.Info(); err == nil && d.Type().IsRegular() && info.Mode().Perm() == 0o666 {
				cached++
			}
		}
		return nil
	})
	if cached == 0 {
		t.Fatalf("no cache file with mode 0666 found under %s", s.dataDir)
	}
	probe := exec.Command("/bin/sh", "-c", `while IFS= read -r p; do
		if [ -d "$p" ]; then ls "$p" >/dev/null 2>&1 && echo "listed $p"; cd "$p" 2>/dev/null && echo "entered $p"; cd /
		elif [ -f "$p" ]; then cat "$p" >/dev/null 2>&1 && echo "read $p"; (: >>"$p") 2>/dev/null && echo "wrote $p"; fi
	done`)
	probe.Stdin = strings.NewReader(strings.Join(paths, "\n") + "\n")
	probe.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := probe.Output()
	if err != nil {
		t.Fatalf("probe as nobody: %v", err)
	}
	if len(out) > 0 {
		t.Errorf("nobody reached inodes of the data directory (%d paths, %d cached with mode 0666):\n%s", len(paths), cached, out)
	}
}
