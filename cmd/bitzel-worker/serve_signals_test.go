package main

import (
	"bytes"
	"context"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
)

// TestServeStopsOnASignalSentAsSoonAsItSaysItIsServing: a shell starts
// background jobs with SIGINT ignored, and a client (or a test) may stop
// serve the moment it reads the "serving" line. serve must hold the
// signals by then; when it took them after the line, such a SIGINT was
// discarded and serve ran on (a rootless CI run hung for 60 s). The
// signal is sent from within the write of that line, so the test does
// not depend on timing.
func TestServeStopsOnASignalSentAsSoonAsItSaysItIsServing(t *testing.T) {
	signal.Ignore(syscall.SIGINT)
	defer signal.Reset(syscall.SIGINT)

	dataDir, err := os.MkdirTemp("", "bitzel-serve-signals-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsutil.RemoveAll(dataDir) })
	// MkdirTemp makes 0700; the ids actions run as must reach the
	// layers below it.
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	f.register(fs)
	if err := fs.Parse([]string{"-data-dir", dataDir, "-listen", "127.0.0.1:0", "-metrics-listen", "", "-warm-sandboxes", "0"}); err != nil {
		t.Fatal(err)
	}
	access, err := newClientAccess(nil, false, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &interruptOnServing{}
	previous := log.Writer()
	log.SetOutput(logs)
	defer log.SetOutput(previous)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, &f, access, func(http.Handler) {}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
		if !logs.sent() {
			t.Fatalf("serve stopped before it said it was serving:\n%s", logs)
		}
		if !bytes.Contains([]byte(logs.String()), []byte("interrupt: draining")) {
			t.Errorf("serve did not stop for the signal:\n%s", logs)
		}
	case <-time.After(30 * time.Second):
		cancel()
		<-done
		t.Fatalf("serve ran on after a SIGINT sent once it said it was serving:\n%s", logs)
	}
}

// interruptOnServing keeps what is logged, and sends this process
// SIGINT as the "serving" line is written.
type interruptOnServing struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	interrupt bool
}

func (w *interruptOnServing) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.interrupt && bytes.Contains(p, []byte("serving REAPI on")) {
		w.interrupt = true
		syscall.Kill(os.Getpid(), syscall.SIGINT)
	}
	return len(p), nil
}

func (w *interruptOnServing) sent() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.interrupt
}

func (w *interruptOnServing) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
