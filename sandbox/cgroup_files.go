package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bitzel/bitzel-worker/sandbox/child"
	"golang.org/x/sys/unix"
)

// Cgroup files are read and written with child.ReadFileDirect and
// WriteFileDirect rather than through os.File: an action's cgroup
// takes a dozen such reads and writes (BenchmarkCgroupFileRead).

func writeCgroupFile(dir, name, value string) error {
	path := filepath.Join(dir, name)
	if err := child.WriteFileDirect(path, []byte(value)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readKeyedValue reads "key value" lines (memory.events,
// memory.oom_control) and returns the value of key.
func readKeyedValue(path, key string) (int64, bool) {
	data, err := child.ReadFileDirect(path)
	if err != nil {
		return 0, false
	}
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		name, value, ok := bytes.Cut(bytes.TrimSpace(line), []byte{' '})
		if ok && string(name) == key {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func readInt(path string) (int64, bool) {
	data, err := child.ReadFileDirect(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return n, err == nil
}

// removeCgroup retries rmdir: processes of a pid namespace that was
// just torn down can stay charged to the cgroup for a moment.
func removeCgroup(dir string) error {
	var err error
	for attempt := 0; attempt < 100; attempt++ {
		err = unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}

// removeCgroupTree removes dir and the groups below it (one level: the
// actions'), ending what is left in them on v2. Close uses it so that
// an action cgroup whose removal failed earlier does not keep the
// runner's own directory at EBUSY for good.
func removeCgroupTree(dir string) error {
	var first error
	entries, _ := os.ReadDir(dir)
	for _, entry := range entries {
		if !entry.IsDir() {
			continue
		}
		child := filepath.Join(dir, entry.Name())
		killCgroup(child)
		if err := removeCgroup(child); err != nil && first == nil {
			first = err
		}
	}
	if err := removeCgroup(dir); err != nil && first == nil {
		first = err
	}
	return first
}
