package execroot

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"golang.org/x/sys/unix"
)

// A directory comes back as a fresh one would be: whatever the action
// left in it (files, a 000 directory, a changed mode, extended
// attributes on the root it saw as its exec root, a spilled log) is
// gone, and it is reused rather than created again.
func TestPoolDirectoriesAreResetForReuse(t *testing.T) {
	d := NewPool(t.TempDir())
	a, err := d.get(2)
	if err != nil {
		t.Fatal(err)
	}
	upper := a.upper(0)
	os.MkdirAll(filepath.Join(upper, "out/locked"), 0o755)
	os.WriteFile(filepath.Join(upper, "out/locked/f"), []byte("x"), 0o644)
	os.Chmod(filepath.Join(upper, "out/locked"), 0)
	os.WriteFile(filepath.Join(a.upper(1), "g"), []byte("y"), 0o644)
	os.Mkdir(filepath.Join(a.work(0), "work"), 0)
	os.WriteFile(a.file("stdout"), []byte("spilled log"), 0o644)
	if err := unix.Setxattr(upper, "user.bitzel-test", []byte("left by the action"), 0); err != nil {
		t.Fatalf("setxattr on the test's file system: %v", err)
	}
	os.Chmod(upper, 0o700)
	path := a.path

	d.put(a)
	b, err := d.get(3)
	if err != nil {
		t.Fatal(err)
	}
	if b.path != path {
		t.Fatalf("got %s, want the reused %s", b.path, path)
	}
	var names []string
	entries, _ := os.ReadDir(b.path)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	want := []string{"upper0", "upper1", "upper2", "work0", "work1", "work2"}
	if len(names) != len(want) {
		t.Fatalf("action directory holds %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("action directory holds %v, want %v", names, want)
		}
	}
	for i := 0; i < 3; i++ {
		for _, dir := range []string{b.upper(i), b.work(i)} {
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("%s still holds %d entries", dir, len(entries))
			}
			if info, _ := os.Stat(dir); info.Mode().Perm() != 0o755 {
				t.Errorf("%s has mode %v", dir, info.Mode().Perm())
			}
			if size, _ := unix.Llistxattr(dir, nil); size != 0 {
				t.Errorf("%s still has extended attributes", dir)
			}
		}
	}
}

// Directories beyond the spare budget are removed, not kept.
func TestPoolKeepsABoundedSpareSet(t *testing.T) {
	d := NewPool(t.TempDir())
	var taken []*directory
	for i := 0; i < maximumSpareDirectories+5; i++ {
		a, err := d.get(1)
		if err != nil {
			t.Fatal(err)
		}
		taken = append(taken, a)
	}
	for _, a := range taken {
		d.put(a)
	}
	entries, _ := os.ReadDir(d.root)
	if len(entries) != maximumSpareDirectories || len(d.spare) != maximumSpareDirectories {
		t.Errorf("%d directories on disk, %d spare; want %d", len(entries), len(d.spare), maximumSpareDirectories)
	}
	a, err := d.get(1)
	if err != nil {
		t.Fatal(err)
	}
	d.discard(a)
	if _, err := os.Stat(a.path); !os.IsNotExist(err) {
		t.Errorf("a discarded directory is still there: %v", err)
	}
}

// BenchmarkPoolPutGet is the directory's round trip between two
// actions that wrote nothing on the host side (a trivial action with a
// disk budget): what every action costs the pool.
func BenchmarkPoolPutGet(b *testing.B) {
	d := NewPool(b.TempDir())
	a, err := d.get(1)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		d.put(a)
		if a, err = d.get(1); err != nil {
			b.Fatal(err)
		}
	}
}
