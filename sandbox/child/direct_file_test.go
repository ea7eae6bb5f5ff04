package child

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDirectFileHelpersActAsOsDoes: ReadFileDirect and WriteFileDirect,
// which the cgroup code and PID 1 use in place of os.ReadFile and
// os.WriteFile, read a
// file longer than their first buffer whole, write (creating and
// truncating) what they are given, and fail with errors os callers can
// test (a missing file is os.ErrNotExist).
func TestDirectFileHelpersActAsOsDoes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	long := strings.Repeat("0123456789", 300)
	if err := WriteFileDirect(path, []byte(long)); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileDirect(path, []byte("short")); err != nil {
		t.Fatal(err)
	}
	if data, err := ReadFileDirect(path); err != nil || string(data) != "short" {
		t.Errorf("after a shorter write: %q, %v", data, err)
	}
	os.WriteFile(path, []byte(long), 0o644)
	if data, err := ReadFileDirect(path); err != nil || string(data) != long {
		t.Errorf("read %d bytes, %v; want %d", len(data), err, len(long))
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o644&^umask() {
		t.Errorf("created with mode %v", info.Mode().Perm())
	}
	if _, err := ReadFileDirect(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
	if err := WriteFileDirect(filepath.Join(dir, "no", "such"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing directory: %v", err)
	}
	if _, err := ReadFileDirect(dir); err == nil {
		t.Error("reading a directory did not fail")
	}
}

func umask() os.FileMode {
	old := unix.Umask(0)
	unix.Umask(old)
	return os.FileMode(old)
}
