package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// A worker killed with SIGKILL cannot clean up: its sandboxes die with
// it (PR_SET_PDEATHSIG) and their mounts with their mount namespaces,
// but its cgroups, build directories and any mount it made in the
// host's namespace stay until the next worker on the same host and data
// directory removes them at start-up, after taking the data
// directory's lock.

// RemovedCgroupLeftovers is how many cgroups of dead workers the
// manager removed when it was created.
func RemovedCgroupLeftovers(m CgroupManager) int {
	switch m := m.(type) {
	case *cgroupV1:
		return m.leftovers
	case *cgroupV2:
		return m.leftovers
	}
	return 0
}

// Leftovers counts what start-up removed of a dead predecessor's.
type Leftovers struct {
	Cgroups, Mounts, BuildDirectories int
}

// Empty: nothing was left.
func (l Leftovers) Empty() bool { return l == Leftovers{} }

func (l Leftovers) String() string {
	return fmt.Sprintf("%d cgroups, %d mounts, %d build directories", l.Cgroups, l.Mounts, l.BuildDirectories)
}

// RemoveLeftoverMounts detaches mounts in the worker's namespace below
// the directories of the data directory where the worker makes them
// (running actions and sandbox state); a data directory that is itself
// a mount, or holds the caches on one, is not touched.
func RemoveLeftoverMounts(dataDir string) (Leftovers, error) {
	var l Leftovers
	for _, dir := range []string{"build", "sandbox"} {
		n, err := RemoveMountsUnder(filepath.Join(dataDir, dir))
		l.Mounts += n
		if err != nil {
			return l, err
		}
	}
	return l, nil
}

// CountEntries is the number of entries in dir (0 when it is absent).
func CountEntries(dir string) int {
	entries, _ := os.ReadDir(dir)
	return len(entries)
}

// RemoveMountsUnder detaches every mount at or below dir in the
// worker's mount namespace, deepest first, and counts them.
func RemoveMountsUnder(dir string) (int, error) {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var targets []string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) < 5 {
			continue
		}
		target := unescapeMountPath(fields[4])
		if within(target, dir) {
			targets = append(targets, target)
		}
	}
	// Children before parents.
	sort.Slice(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	removed := 0
	for _, target := range targets {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			return removed, fmt.Errorf("unmount %s: %w", target, err)
		}
		removed++
	}
	return removed, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a
// space).
func unescapeMountPath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' && i+3 < len(p) {
			var c byte
			if _, err := fmt.Sscanf(p[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// killCgroup writes cgroup.kill where it exists (v2); never creates it.
func killCgroup(dir string) {
	f, err := os.OpenFile(filepath.Join(dir, "cgroup.kill"), os.O_WRONLY, 0)
	if err != nil {
		return
	}
	f.WriteString("1")
	f.Close()
}
