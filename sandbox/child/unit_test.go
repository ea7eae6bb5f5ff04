package child

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Most of this package runs only as a sandbox's PID 1 or launcher,
// where the tests of package sandbox exercise it (and go test -cover
// does not see it). These are the parts that need no namespaces.

func openDescriptors(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestNameByDescriptorNamesEveryDirectoryOfAMount: the names given to
// overlayfs lead to the mount's own layers, upper and work directories,
// in order, and stay valid until the returned function closes them;
// a missing layer is an error naming it, with nothing left open.
func TestNameByDescriptorNamesEveryDirectoryOfAMount(t *testing.T) {
	base := t.TempDir()
	dir := func(name string) string {
		path := filepath.Join(base, name)
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	mount := &Mount{Path: "sub", Layers: []string{dir("l1"), dir("l2")}, UpperDir: dir("upper"), WorkDir: dir("work")}
	before := openDescriptors(t)
	names, closeNames, err := nameByDescriptor(mount)
	if err != nil {
		t.Fatal(err)
	}
	if names.Path != "sub" {
		t.Errorf("path %q, want the mount's", names.Path)
	}
	given := append(append([]string{}, names.Layers...), names.UpperDir, names.WorkDir)
	want := append(append([]string{}, mount.Layers...), mount.UpperDir, mount.WorkDir)
	for i, name := range given {
		if !strings.HasPrefix(name, "/proc/self/fd/") {
			t.Errorf("name %q is not a descriptor's", name)
			continue
		}
		if target, err := os.Readlink(name); err != nil || target != want[i] {
			t.Errorf("%s leads to %q (%v), want %q", name, target, err, want[i])
		}
	}
	closeNames()
	if after := openDescriptors(t); after != before {
		t.Errorf("%d descriptors open after closing the names, %d before", after, before)
	}

	missing := &Mount{Layers: []string{mount.Layers[0], filepath.Join(base, "gone")}, UpperDir: mount.UpperDir, WorkDir: mount.WorkDir}
	if _, _, err := nameByDescriptor(missing); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("a missing layer: %v", err)
	}
	if after := openDescriptors(t); after != before {
		t.Errorf("%d descriptors open after a failed naming, %d before", after, before)
	}
}

// TestLegacyOptionsEscapeTheSeparators: ':' separates lower layers and
// ',' options in mount(2)'s option string, so a path holding them (or
// the escape character) is escaped, not split.
func TestLegacyOptionsEscapeTheSeparators(t *testing.T) {
	got := legacyOptions([]string{"/l/a:b", "/l/c,d"}, `/u\x`, "/w")
	want := `lowerdir=/l/a\:b:/l/c\,d,upperdir=/u\\x,workdir=/w,userxattr`
	if got != want {
		t.Errorf("options\n%s\nwant\n%s", got, want)
	}
}

// TestLookPathSearchesTheActionsPATH: a name is looked up in the
// action's PATH (relative entries against its working directory), only
// executable regular files count, and a name with a slash is used as
// given.
func TestLookPathSearchesTheActionsPATH(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"bin/tool": 0o755, "bin/data": 0o644, "abs/other": 0o755} {
		path := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "bin", "subdir"), 0o755)
	path := "PATH=bin:" + filepath.Join(dir, "abs")
	for _, c := range []struct{ name, want string }{
		{"tool", "./bin/tool"},
		{"other", filepath.Join(dir, "abs", "other")},
		{"sub/x", "sub/x"},
	} {
		if got, err := lookPath(c.name, dir, []string{"HOME=/", path}); err != nil || got != c.want {
			t.Errorf("lookPath(%q) = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	for _, name := range []string{"data", "subdir", "none"} {
		if got, err := lookPath(name, dir, []string{path}); err == nil || !strings.Contains(err.Error(), "bin:") {
			t.Errorf("lookPath(%q) = %q, %v; want not found, naming the PATH", name, got, err)
		}
	}
}

// TestIdentityMapsKeepTheLaunchersIDs: a sandbox's user namespace
// below the launcher's maps each id the launcher has to itself.
func TestIdentityMapsKeepTheLaunchersIDs(t *testing.T) {
	got := identityMaps([]IDMap{{ContainerID: 0, HostID: 1_000_000_000, Size: 65536}, {ContainerID: 70000, HostID: 5, Size: 1}})
	want := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}, {ContainerID: 70000, HostID: 70000, Size: 1}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("identityMaps = %v, want %v", got, want)
	}
}

// TestCopyDirectoriesRecreatesThePreparedSkeleton: the directories the
// worker prepared in an upper directory (parents of outputs) reappear
// in the disk budget's tmpfs with their modes; a file there is not
// expected and is an error naming it.
func TestCopyDirectoriesRecreatesThePreparedSkeleton(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "u0")
	dirs := []struct {
		name string
		mode os.FileMode
	}{{"out", 0o755}, {"out/deep", 0o750}, {"other", 0o711}}
	for _, d := range dirs {
		if err := os.Mkdir(filepath.Join(src, d.name), 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(src, d.name), d.mode)
	}
	if err := copyDirectories(src, dst); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		name, mode := d.name, d.mode
		info, err := os.Stat(filepath.Join(dst, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if !info.IsDir() || info.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want a directory of mode %v", name, info.Mode(), mode)
		}
	}
	os.WriteFile(filepath.Join(src, "out", "stray"), nil, 0o644)
	if err := copyDirectories(src, filepath.Join(t.TempDir(), "u1")); err == nil || !strings.Contains(err.Error(), "stray") {
		t.Errorf("a file in a prepared upper directory: %v", err)
	}
}

// TestUserNamespaceLimitsTryEachProcDirectory: each sysctl is written
// to the first /proc that takes it, one the kernel does not have is
// skipped, and a name that is not a /proc/sys/user file is refused.
func TestUserNamespaceLimitsTryEachProcDirectory(t *testing.T) {
	unwritable, writable := t.TempDir(), t.TempDir()
	for _, proc := range []string{unwritable, writable} {
		os.MkdirAll(filepath.Join(proc, "sys", "user"), 0o755)
	}
	// A directory where the file should be fails the write, as a
	// read-only /proc/sys does, even for root.
	os.Mkdir(filepath.Join(unwritable, "sys", "user", "max_inotify_instances"), 0o755)
	os.WriteFile(filepath.Join(writable, "sys", "user", "max_inotify_instances"), []byte("128"), 0o644)
	limits := &UserNamespaceLimits{Sysctls: map[string]int64{"max_inotify_instances": 64}}
	if err := limits.apply(unwritable, writable); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(writable, "sys", "user", "max_inotify_instances")); string(data) != "64" {
		t.Errorf("max_inotify_instances is %q, want 64", data)
	}
	if err := limits.apply(unwritable); err == nil || !errors.Is(err, unix.EISDIR) {
		t.Errorf("no /proc takes the limit: %v", err)
	}
	// A kernel without a limit has no file for it, and no file can be
	// created in /proc/sys (here: no sys/user directory at all).
	absent := &UserNamespaceLimits{Sysctls: map[string]int64{"max_absent_things": 1}}
	if err := absent.apply(t.TempDir()); err != nil {
		t.Errorf("a limit this kernel does not have: %v", err)
	}
	// Nor is a missing file created where the directory exists, and a
	// link in its place is not followed.
	if err := absent.apply(writable); err != nil {
		t.Errorf("a limit this kernel does not have, in an existing sys/user: %v", err)
	}
	if _, err := os.Stat(filepath.Join(writable, "sys", "user", "max_absent_things")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("applying a limit the kernel does not have created its file: %v", err)
	}
	target := filepath.Join(t.TempDir(), "target")
	os.WriteFile(target, []byte("1"), 0o644)
	os.Symlink(target, filepath.Join(writable, "sys", "user", "max_linked"))
	linked := &UserNamespaceLimits{Sysctls: map[string]int64{"max_linked": 7}}
	if err := linked.apply(writable); err == nil || !errors.Is(err, unix.ELOOP) {
		t.Errorf("a link in place of the limit's file: %v", err)
	}
	if data, _ := os.ReadFile(target); string(data) != "1" {
		t.Errorf("the link's target was written: %q", data)
	}
	bad := &UserNamespaceLimits{Sysctls: map[string]int64{"../../kernel/x": 1}}
	if err := bad.apply(writable); err == nil || !strings.Contains(err.Error(), "not a /proc/sys/user name") {
		t.Errorf("a name outside /proc/sys/user: %v", err)
	}
	var none *UserNamespaceLimits
	if err := none.apply("/nonexistent"); err != nil {
		t.Errorf("no limits: %v", err)
	}
}
