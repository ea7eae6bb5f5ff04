package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRemoveAllTakesDirectoriesWithoutPermissions: overlayfs leaves its
// work/work directory at mode 0 and an action may chmod its directories
// 000 or 0555; os.RemoveAll gives up on those unless the caller is
// root. (As root this passes either way; the rootless run is the one
// that can fail.)
func TestRemoveAllTakesDirectoriesWithoutPermissions(t *testing.T) {
	base := t.TempDir()
	tree := filepath.Join(base, "tree")
	for _, d := range []string{"a/b/c", "noaccess/inner", "readonly/inner"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tree, d, "file"), []byte("x"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	// Inner directories first: their parents lose search permission.
	for _, c := range []struct {
		dir  string
		mode os.FileMode
	}{{"noaccess/inner", 0}, {"noaccess", 0}, {"readonly/inner", 0o555}, {"readonly", 0o555}} {
		if err := os.Chmod(filepath.Join(tree, c.dir), c.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveAll(tree); err != nil {
		t.Fatalf("RemoveAll: %v", err)
	}
	if _, err := os.Lstat(tree); !os.IsNotExist(err) {
		t.Errorf("%s still there after RemoveAll: %v", tree, err)
	}
	if err := RemoveAll(filepath.Join(base, "never-was")); err != nil {
		t.Errorf("RemoveAll of a missing path: %v", err)
	}
}
