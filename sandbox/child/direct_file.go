package child

import (
	"io"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// ReadFileDirect and WriteFileDirect read and write small files of
// the kernel's (cgroupfs, procfs, sysfs) with plain system calls rather
// than through os.File: such a file can be polled, so os would make
// it non-blocking and register it with the runtime's poller (two fcntl
// and an epoll_ctl to add it, another to remove it, and on the first
// one the poller itself) for a read or a write that never blocks. The
// worker's cgroup code does a dozen per action (BenchmarkCgroupFileRead),
// and PID 1 as many in its checks between actions (health.go).

// WriteFileDirect is os.WriteFile(path, data, 0o644) without os.File.
func WriteFileDirect(path string, data []byte) error {
	fd, err := openDirect(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
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

// ReadFileDirect is os.ReadFile without os.File, for small files
// whose size stat does not tell (cgroupfs, procfs: 0 or 4096 whatever
// they hold).
func ReadFileDirect(path string) ([]byte, error) {
	fd, err := openDirect(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
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

func openDirect(path string, flags int, mode uint32) (int, error) {
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
