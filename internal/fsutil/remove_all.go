// Package fsutil holds the one way the worker deletes trees that an
// action, overlayfs or the caches left: with directories that have no
// write or search permission.
package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// RemoveAll deletes a tree an action or the kernel wrote, which may
// hold directories without write or search permission (overlayfs
// leaves its work/work directory at mode 0, and an action may chmod
// 000 its own directories). os.RemoveAll gives up on those when the
// worker is not root.
func RemoveAll(path string) error {
	err := os.RemoveAll(path)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			os.Chmod(p, 0o700)
			if err != nil {
				// WalkDir could not read it before the chmod; it
				// will not descend again, so recurse by hand.
				RemoveAll(p)
			}
		}
		return nil
	})
	return os.RemoveAll(path)
}
