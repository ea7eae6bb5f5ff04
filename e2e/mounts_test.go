package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mountsUnder returns the lines of /proc/self/mountinfo whose mount
// point is dir or below it, without the mount and parent IDs (they
// differ between two identical mounts): a test compares only the
// mounts it owns, as other processes of the machine mount things.
func mountsUnder(t testing.TB, dir string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return parseMountsUnder(string(data), dir)
}

// ownMounts are the mounts in the host's table that the e2e tests'
// servers could have left: those at or below the temporary directories
// the tests make (bitzel-e2e-*, the data directories among them).
// Other mounts of the machine come and go with other work and are
// none of the tests' business.
func ownMounts(t testing.TB) map[string]bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return parseMountsWithPrefix(string(data), filepath.Join(os.TempDir(), "bitzel-"))
}

func parseMountsWithPrefix(mountinfo, prefix string) map[string]bool {
	mounts := map[string]bool{}
	for _, line := range strings.Split(mountinfo, "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.HasPrefix(fields[4], prefix) {
			mounts[strings.Join(fields[2:], " ")] = true
		}
	}
	return mounts
}

func parseMountsUnder(mountinfo, dir string) map[string]bool {
	mounts := map[string]bool{}
	for _, line := range strings.Split(mountinfo, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		if point := fields[4]; point == dir || strings.HasPrefix(point, dir+"/") {
			mounts[strings.Join(fields[2:], " ")] = true
		}
	}
	return mounts
}

// expectSameMounts reports the mounts under dir added or removed since
// before.
func expectSameMounts(t testing.TB, dir string, before map[string]bool) {
	t.Helper()
	reportMountChanges(t, dir, before, mountsUnder(t, dir))
}

func reportMountChanges(t testing.TB, dir string, before, after map[string]bool) {
	t.Helper()
	var added, removed []string
	for m := range after {
		if !before[m] {
			added = append(added, m)
		}
	}
	for m := range before {
		if !after[m] {
			removed = append(removed, m)
		}
	}
	if len(added) > 0 || len(removed) > 0 {
		t.Errorf("mounts under %s changed:\nadded:\n  %s\nremoved:\n  %s", dir, strings.Join(added, "\n  "), strings.Join(removed, "\n  "))
	}
}

type errorRecorder struct {
	testing.TB
	errors []string
}

func (r *errorRecorder) Errorf(format string, a ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, a...))
}

// Mounts elsewhere on the machine, and new IDs of the same mounts, are
// not a change; a mount added or removed under the directory is, and
// the report names it.
func TestMountComparisonIsOfTheOwnedDirectory(t *testing.T) {
	before := parseMountsUnder(`22 1 0:21 / / rw - ext4 /dev/vda rw
30 22 0:40 / /data/sandbox/root rw,nosuid - tmpfs tmpfs rw
`, "/data")
	after := parseMountsUnder(`22 1 0:21 / / rw - ext4 /dev/vda rw
77 22 0:40 / /data/sandbox/root rw,nosuid - tmpfs tmpfs rw
78 22 0:41 / /srv/other-test rw - tmpfs tmpfs rw
79 22 0:42 / /database rw - tmpfs tmpfs rw
`, "/data")
	r := &errorRecorder{TB: t}
	reportMountChanges(r, "/data", before, after)
	if len(r.errors) != 0 {
		t.Errorf("reported %q", r.errors)
	}
	leaked := parseMountsUnder("80 22 0:43 / /data/build/1/root rw - overlay overlay rw\n", "/data")
	for m := range before {
		leaked[m] = true
	}
	reportMountChanges(r, "/data", before, leaked)
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], "added:\n  0:43 / /data/build/1/root rw - overlay overlay rw") {
		t.Errorf("a leaked overlay was reported as %q", r.errors)
	}
}

// The tests' own mounts are those under their temporary directories;
// the machine's others (a mount another process made under /tmp, say)
// are left out, and a leaked one is in.
func TestOwnMountsAreThoseUnderTheTestsTemporaryDirectories(t *testing.T) {
	mounts := parseMountsWithPrefix(`22 1 0:21 / / rw - ext4 /dev/vda rw
31 22 0:44 / /tmp/other-program rw - tmpfs tmpfs rw
32 22 0:45 / /tmp/bitzel-e2e-data-123/build/1/root rw - overlay overlay rw
33 22 0:46 / /tmp/bitzel-e2e-cluster-9 rw - tmpfs tmpfs rw
`, "/tmp/bitzel-")
	want := []string{"0:45 / /tmp/bitzel-e2e-data-123/build/1/root rw - overlay overlay rw", "0:46 / /tmp/bitzel-e2e-cluster-9 rw - tmpfs tmpfs rw"}
	if len(mounts) != len(want) || !mounts[want[0]] || !mounts[want[1]] {
		t.Errorf("own mounts %v, want %q", mounts, want)
	}
}
