package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Cgroup files are read and written with plain system calls rather
// than through os.File: a kernfs file can be polled, so os would make
// each one non-blocking and register it with the runtime's poller
// (two fcntl and an epoll_ctl to add it, another to remove it) for a
// read or a write that never blocks. An action's cgroup takes a dozen
// such reads and writes (BenchmarkCgroupFileRead).

func writeCgroupFile(dir, name, value string) error {
	path := filepath.Join(dir, name)
	if err := writeFileRaw(path, []byte(value)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeFileRaw is os.WriteFile(path, data, 0o644) without os.File.
func writeFileRaw(path string, data []byte) error {
	fd, err := openRaw(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	for len(data) > 0 && err == nil {
		var n int
		if n, err = unix.Write(fd, data); err == unix.EINTR {
			err = nil
		} else if err == nil && n == 0 {
			err = io.ErrShortWrite
		}
		data = data[max(n, 0):]
	}
	if closeErr := unix.Close(fd); err == nil && closeErr != nil {
		err = closeErr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// readFileRaw is os.ReadFile without os.File, for the small files of
// cgroupfs (whose sizes stat reports as 0 or 4096 whatever they hold).
func readFileRaw(path string) ([]byte, error) {
	fd, err := openRaw(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	data := make([]byte, 0, 512)
	for {
		if len(data) == cap(data) {
			data = slices.Grow(data, cap(data))
		}
		n, err := unix.Read(fd, data[len(data):cap(data)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return data, nil
		}
		data = data[:len(data)+n]
	}
}

func openRaw(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags, mode)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// readKeyedValue reads "key value" lines (memory.events,
// memory.oom_control) and returns the value of key.
func readKeyedValue(path, key string) (int64, bool) {
	data, err := readFileRaw(path)
	if err != nil {
		return 0, false
	}
	scanner := bufio.NewScanner(bytes.NewReader(data))
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) == 2 && fields[0] == key {
			n, err := strconv.ParseInt(fields[1], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func readInt(path string) (int64, bool) {
	data, err := readFileRaw(path)
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
