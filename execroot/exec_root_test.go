package execroot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/sandbox"
)

// inputsOver is a materialised input root of one mount over layer.
func inputsOver(layer string) *layers.InputRoot {
	return &layers.InputRoot{Mounts: []layers.Mount{{Path: "", Layers: []string{layer}}}}
}

func (d *Pool) isSpare(path string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.spare {
		if a.path == path {
			return true
		}
	}
	return false
}

// After a run with a disk budget, the action's writes are read through
// the budget's tmpfs; Release closes it, and the directory goes back to
// the pool only once the sandbox has been reaped (before that its
// overlay may still be mounted), emptied.
func TestReleaseClosesTheDiskBudgetAndReturnsTheDirectoryOnceTheSandboxIsReaped(t *testing.T) {
	pool := NewPool(t.TempDir())
	r, err := pool.Prepare(inputsOver(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	upper := r.Mounts()[0].UpperDir
	if got := r.UpperDirs(); len(got) != 1 || got[0] != upper {
		t.Fatalf("before the run the writes are in %v, want %q", got, upper)
	}
	if err := os.Mkdir(filepath.Join(upper, "left"), 0o755); err != nil {
		t.Fatal(err)
	}
	budget, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	r.Ran(&sandbox.Result{DiskBudget: budget, Released: released})
	if got, want := r.UpperDirs(), fmt.Sprintf("/proc/self/fd/%d/u0", budget.Fd()); len(got) != 1 || got[0] != want {
		t.Errorf("after the run the writes are read from %v, want the disk budget's %q", got, want)
	}
	r.Release()
	r.Release()
	if err := budget.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("closing the disk budget again: %v, want it closed by Release", err)
	}
	dir := filepath.Dir(upper)
	time.Sleep(10 * time.Millisecond)
	if pool.isSpare(dir) {
		t.Fatalf("directory %q taken back before its sandbox was reaped", dir)
	}
	close(released)
	for deadline := time.Now().Add(5 * time.Second); !pool.isSpare(dir); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("directory %q never taken back", dir)
		}
	}
	if entries, _ := os.ReadDir(upper); len(entries) != 0 {
		t.Errorf("the upper directory taken back holds %d entries, want it emptied", len(entries))
	}
}

// Without Ran (the sandbox failed) the directory is in an unknown
// state: Release removes it rather than reusing it.
func TestExecRootOfAFailedRunIsRemoved(t *testing.T) {
	pool := NewPool(t.TempDir())
	r, err := pool.Prepare(inputsOver(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(r.Mounts()[0].UpperDir)
	r.Release()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("directory of a failed run: %v, want it removed", err)
	}
	if pool.isSpare(dir) {
		t.Error("directory of a failed run kept for reuse")
	}
}

// fakeLease is a leased layer at path that records its release.
type fakeLease struct {
	path     string
	released int
}

func (l *fakeLease) Path() string { return l.path }
func (l *fakeLease) Release()     { l.released++ }

// A container image's layers go under the input root's own, on the
// root mount only, without changing the materialiser's slice, and
// their leases are the exec root's: released with it, once.
func TestRootLayersBelowGoUnderTheInputRootsOwn(t *testing.T) {
	inputs := &layers.InputRoot{Mounts: []layers.Mount{
		{Path: "", Layers: []string{"/in/root"}},
		{Path: "sub", Layers: []string{"/in/sub"}},
	}}
	top, base := &fakeLease{path: "/image/top"}, &fakeLease{path: "/image/base"}
	r, err := NewPool(t.TempDir()).Prepare(inputs, []layers.LayerLease{top, base})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		r.Release()
		r.Release()
		if top.released != 1 || base.released != 1 {
			t.Errorf("image layers released %d and %d times, want once each", top.released, base.released)
		}
	}()
	mounts := r.Mounts()
	if got := fmt.Sprint(mounts[0].Layers); got != "[/in/root /image/top /image/base]" {
		t.Errorf("root mount layers %s", got)
	}
	if got := fmt.Sprint(mounts[1].Layers); got != "[/in/sub]" {
		t.Errorf("sub mount layers %s", got)
	}
	if got := fmt.Sprint(inputs.Mounts[0].Layers); got != "[/in/root]" {
		t.Errorf("the materialiser's layers became %s", got)
	}
	if mounts[1].Path != "sub" || mounts[0].UpperDir == mounts[1].UpperDir || mounts[0].WorkDir == mounts[1].WorkDir {
		t.Errorf("mounts %+v: want each its own upper and work directory", mounts)
	}
}

// Of the mount points the sandbox made at the top of a whole-root exec
// root, only those it alone made go: one the input has, or the action
// filled, stays.
func TestRemoveSandboxMountPointsKeepsWhatTheInputOrTheActionMade(t *testing.T) {
	layer := t.TempDir()
	if err := os.Mkdir(filepath.Join(layer, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := NewPool(t.TempDir()).Prepare(inputsOver(layer), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	upper := r.UpperDirs()[0]
	for _, dir := range []string{"dev", "proc", "tmp"} {
		if err := os.Mkdir(filepath.Join(upper, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(upper, "proc", "made-by-the-action"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.RemoveSandboxMountPoints()
	for dir, want := range map[string]bool{"dev": false, "proc": true, "tmp": true} {
		if _, err := os.Lstat(filepath.Join(upper, dir)); (err == nil) != want {
			t.Errorf("%s: present %v, want %v", dir, err == nil, want)
		}
	}
}
