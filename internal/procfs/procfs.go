// Package procfs reads the few process facts that the tests and the
// benchmark harness take from /proc: CPU time, and which process
// started which.
package procfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture).
const userHZ = 100

// CPUTime is utime+stime+cutime+cstime of pid: its own CPU time and
// that of the children it has reaped.
func CPUTime(pid int) (time.Duration, error) {
	own, reaped, err := CPUTimes(pid)
	return own + reaped, err
}

// CPUTimes splits CPUTime: own is utime+stime of pid itself, reaped
// the cutime+cstime of the children it has waited for (a sandbox
// launcher's sandboxes, a runner's commands).
func CPUTimes(pid int) (own, reaped time.Duration, err error) {
	fields, err := statFields(pid)
	if err != nil {
		return 0, 0, err
	}
	if len(fields) < 15 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	var ticks [4]int64
	for i, f := range fields[11:15] {
		if ticks[i], err = strconv.ParseInt(f, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
	}
	return time.Duration(ticks[0]+ticks[1]) * time.Second / userHZ, time.Duration(ticks[2]+ticks[3]) * time.Second / userHZ, nil
}

// Name is the base name of the process's argv[0], or its command name
// (/proc/PID/comm, cut at 15 bytes) when argv is empty; "" when there
// is no such process.
func Name(pid int) string {
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		if argv0, _, _ := strings.Cut(string(cmdline), "\x00"); argv0 != "" {
			return filepath.Base(argv0)
		}
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// Children lists the processes whose parent is parent and whose argv[0]
// is name or a path ending in /name.
func Children(parent int, name string) []int {
	entries, _ := os.ReadDir("/proc")
	var found []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv0, _, _ := strings.Cut(string(cmdline), "\x00")
		if filepath.Base(argv0) != name {
			continue
		}
		// After the command: state, then the parent's pid.
		if fields, err := statFields(pid); err == nil && len(fields) > 1 && fields[1] == strconv.Itoa(parent) {
			found = append(found, pid)
		}
	}
	return found
}

// statFields splits /proc/PID/stat after the command name, which may
// itself hold spaces and parentheses: fields[0] is the state.
func statFields(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	end := strings.LastIndexByte(string(data), ')')
	if end < 0 || end+2 > len(data) {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	return strings.Fields(string(data[end+2:])), nil
}
