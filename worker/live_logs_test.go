package worker

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/bitzel/bitzel-worker/worker/livelogs"
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

// The executor's side of live logs: with an offer in the context its
// logs go to live logs the offer is given, which it withdraws when the
// logs are closed; without one the buffers are used as they are.
func TestExecutorOffersItsLogsWhileTheActionRuns(t *testing.T) {
	var offered []livelogs.Source
	withdrawn := false
	ctx := WithLiveLogs(context.Background(), func(stdout, stderr livelogs.Source) func() {
		offered = append(offered, stdout, stderr)
		return func() { withdrawn = true }
	})
	stdout, stderr, closeLogs := offerLiveLogs(ctx, newLogBuffer(filepath.Join(t.TempDir(), "o")), newLogBuffer(filepath.Join(t.TempDir(), "e")))
	if _, ok := stdout.(*liveLog); !ok {
		t.Fatalf("stdout goes to %T, want a live log", stdout)
	}
	if _, ok := stderr.(*liveLog); !ok {
		t.Fatalf("stderr goes to %T, want a live log", stderr)
	}
	if len(offered) != 2 || offered[0] != stdout.(*liveLog) || offered[1] != stderr.(*liveLog) {
		t.Fatalf("offered %v, want the two live logs", offered)
	}
	if withdrawn {
		t.Fatal("withdrawn before the logs were closed")
	}
	closeLogs()
	if !withdrawn {
		t.Fatal("closing the logs did not withdraw them")
	}
	// Without live logs in the context the buffers are used as they
	// are.
	buffer := newLogBuffer(filepath.Join(t.TempDir(), "x"))
	if w, _, _ := offerLiveLogs(context.Background(), buffer, buffer); w != io.Writer(buffer) {
		t.Fatalf("without live logs stdout goes to %T", w)
	}
}
