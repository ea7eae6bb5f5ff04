package worker

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestLogBufferSpillsToAFileBeyondItsMemoryLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdout")
	l := newLogBuffer(path)
	small := bytes.Repeat([]byte("a"), 1000)
	l.Write(small)
	if l.spilled {
		t.Fatal("a short log went to a file")
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("a short log created a file")
	}
	big := bytes.Repeat([]byte("b"), logMemoryLimit)
	if n, err := l.Write(big); err != nil || n != len(big) {
		t.Fatalf("write: %d, %v", n, err)
	}
	l.Write([]byte("tail"))
	if !l.spilled || l.mem.Len() != 0 {
		t.Fatal("a long log stayed in memory")
	}
	l.file.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte{}, small...), big...), "tail"...)
	if !bytes.Equal(data, want) {
		t.Errorf("file holds %d bytes, want %d in order", len(data), len(want))
	}
}
