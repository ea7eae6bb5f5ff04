package storage

import (
	"bytes"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A new data directory and a restart after a clean stop are normal
// starts: nothing is logged. Blocks without their state (a crash
// before the first sync) are said once, naming the store.
func TestLocalStorageStartsQuietly(t *testing.T) {
	var logged bytes.Buffer
	log.SetOutput(&logged)
	defer log.SetOutput(os.Stderr)
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		storage, err := NewLocalStorage(dir, 64<<20, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		if err := storage.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if logged.Len() != 0 {
		t.Errorf("normal starts logged:\n%s", logged.String())
	}
	if err := os.Remove(filepath.Join(dir, "cas", "state", "state")); err != nil {
		t.Fatal(err)
	}
	storage, err := NewLocalStorage(dir, 64<<20, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	storage.Close()
	if got := logged.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, filepath.Join(dir, "cas")+" starts empty") {
		t.Errorf("a lost state logged %q", got)
	}
}
