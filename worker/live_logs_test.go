package worker

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/worker/livelogs"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

func readLive(t *testing.T, l *liveLog, off int64, n int) string {
	t.Helper()
	p := make([]byte, n)
	got, err := l.ReadAt(p, off)
	if err != nil {
		t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
	}
	return string(p[:got])
}

func TestLiveLogReadsMemoryThenTheSpilledFile(t *testing.T) {
	buffer := newLogBuffer(filepath.Join(t.TempDir(), "stdout"))
	l := newLiveLog(buffer)
	_, _, changed := l.Snapshot()
	io.WriteString(l, "hello ")
	select {
	case <-changed:
	default:
		t.Fatal("a write did not wake readers")
	}
	if got := readLive(t, l, 0, 100); got != "hello " {
		t.Fatalf("from memory: %q", got)
	}
	// Past the memory limit the buffer moves to its file; what was
	// in memory is read from there too.
	big := bytes.Repeat([]byte("x"), logMemoryLimit)
	l.Write(big)
	if !buffer.spilled {
		t.Fatal("the buffer did not spill")
	}
	if got := readLive(t, l, 0, 8); got != "hello xx" {
		t.Fatalf("from the file: %q", got)
	}
	if size, done, _ := l.Snapshot(); size != int64(6+len(big)) || done {
		t.Fatalf("snapshot %d %v", size, done)
	}
	if _, err := l.ReadAt(make([]byte, 1), int64(6+len(big))); err != io.EOF {
		t.Fatalf("at the end: %v, want EOF", err)
	}
	// Once the action ends its file is the next action's: not read.
	l.close()
	if _, done, _ := l.Snapshot(); !done {
		t.Fatal("not done after close")
	}
	if _, err := l.ReadAt(make([]byte, 1), 0); err == nil {
		t.Fatal("a spilled log was read after its action ended")
	}
}

func TestLiveLogInMemoryStaysReadableAfterItsActionEnds(t *testing.T) {
	l := newLiveLog(newLogBuffer(filepath.Join(t.TempDir(), "stderr")))
	io.WriteString(l, "tail")
	l.close()
	if got := readLive(t, l, 1, 10); got != "ail" {
		t.Fatalf("after close: %q", got)
	}
}

func TestOperationNamesItsLiveLogsOnlyWhileRunning(t *testing.T) {
	function := digest.MustNewFunction("main", remoteexecution.DigestFunction_SHA256)
	actionDigest, err := function.NewDigest(strings.Repeat("a", 64), 1)
	if err != nil {
		t.Fatal(err)
	}
	op := newOperation("op", actionDigest)
	registry := livelogs.NewRegistry()
	instance, err := digest.NewInstanceName("main")
	if err != nil {
		t.Fatal(err)
	}
	request := &Request{InstanceName: instance, ClientIdentity: "me"}
	ctx := liveLogsContext(context.Background(), registry, op, request)
	stdout, stderr, closeLogs := offerLiveLogs(ctx, newLogBuffer(filepath.Join(t.TempDir(), "o")), newLogBuffer(filepath.Join(t.TempDir(), "e")))
	if _, ok := stdout.(*liveLog); !ok {
		t.Fatalf("stdout goes to %T, want a live log", stdout)
	}
	if _, ok := stderr.(*liveLog); !ok {
		t.Fatalf("stderr goes to %T, want a live log", stderr)
	}
	metadata := func() *remoteexecution.ExecuteOperationMetadata {
		snapshot, _, _ := op.snapshot()
		m := &remoteexecution.ExecuteOperationMetadata{}
		if err := snapshot.Metadata.UnmarshalTo(m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := metadata()
	if !strings.HasPrefix(m.StdoutStreamName, "main/live-logs/") || !strings.HasSuffix(m.StdoutStreamName, "/stdout") || !strings.HasSuffix(m.StderrStreamName, "/stderr") {
		t.Fatalf("stream names %q %q", m.StdoutStreamName, m.StderrStreamName)
	}
	if registry.Len() != 2 {
		t.Fatalf("%d live logs registered, want 2", registry.Len())
	}
	closeLogs()
	if m := metadata(); m.StdoutStreamName != "" || m.StderrStreamName != "" || registry.Len() != 0 {
		t.Fatalf("after the action: names %q %q, %d registered", m.StdoutStreamName, m.StderrStreamName, registry.Len())
	}
	// Without live logs in the context the buffers are used as they
	// are.
	buffer := newLogBuffer(filepath.Join(t.TempDir(), "x"))
	if w, _, _ := offerLiveLogs(context.Background(), buffer, buffer); w != io.Writer(buffer) {
		t.Fatalf("without live logs stdout goes to %T", w)
	}
}
