package outputs

import (
	"path"
	"path/filepath"
	"strings"

	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/util"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Output directories are created before the action runs, in the
// upperdirs, because only the merged view knows whether a parent is
// already there (in a layer) and which mount holds it.

// mountFor returns the index of the deepest mount containing relPath
// and relPath relative to that mount.
func mountFor(r *layers.InputRoot, relPath string) (int, string) {
	best, rest := 0, relPath
	for i, m := range r.Mounts {
		if i == 0 {
			continue
		}
		if relPath == m.Path {
			return i, ""
		}
		if strings.HasPrefix(relPath, m.Path+"/") && len(m.Path) > len(r.Mounts[best].Path) {
			best, rest = i, relPath[len(m.Path)+1:]
		}
	}
	return best, rest
}

// MkdirAll creates the directory relPath (relative to the exec root of
// r) in the merged view before the action runs, by creating it in the
// upperdir of the mount that holds it; uppers[i] is the upperdir of
// Mounts[i]. Bazel 2.0 clients expect the parents of their outputs to
// exist. Created directories, including upper copies of lower
// directories on the way, are 0755 and owned by the owner of the
// upperdir, so that the action (possibly mapped to another uid) can
// write its outputs in them.
func MkdirAll(r *layers.InputRoot, uppers []string, relPath string) error {
	if strings.HasPrefix(relPath, "/") {
		return status.Errorf(codes.InvalidArgument, "Path %q is absolute", relPath)
	}
	clean := path.Clean(relPath)
	if clean == "." {
		return nil
	}
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return status.Errorf(codes.InvalidArgument, "Path %q leaves the exec root", relPath)
	}
	mv, err := newMergedView(r, uppers)
	if err != nil {
		return err
	}
	components := splitPath(clean)
	for i := range components {
		prefix := strings.Join(components[:i+1], "/")
		n, err := mv.lookup(prefix)
		if err != nil {
			return err
		}
		if n != nil {
			if n.kind != kindDirectory {
				return status.Errorf(codes.FailedPrecondition, "Cannot create directory %q: %q exists and is not a directory", relPath, prefix)
			}
			continue
		}
		m, rest := mountFor(r, prefix)
		if err := mkdirInUpper(uppers[m], rest); err != nil {
			return util.StatusWrapf(err, "Failed to create directory %q", prefix)
		}
	}
	return nil
}

func mkdirInUpper(upper, rest string) error {
	var owner unix.Stat_t
	if err := unix.Stat(upper, &owner); err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to stat upper directory")
	}
	p := upper
	for _, c := range splitPath(rest) {
		p = filepath.Join(p, c)
		err := unix.Mkdir(p, 0o755)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "mkdir")
		}
		// mkdir honours the umask; the action needs exactly 0755.
		if err := unix.Chmod(p, 0o755); err != nil {
			return util.StatusWrapWithCode(err, codes.Internal, "chmod")
		}
		if unix.Geteuid() == 0 {
			if err := unix.Lchown(p, int(owner.Uid), int(owner.Gid)); err != nil {
				return util.StatusWrapWithCode(err, codes.Internal, "chown")
			}
		}
	}
	return nil
}
