package cas

import (
	"context"

	"github.com/buildbarn/bb-storage/pkg/util"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

// Directories of a layer are created writable for the build and made
// read-only (but readable and searchable by every uid) afterwards.
const (
	layerDirBuildMode = 0o755
	layerDirMode      = 0o555
)

// layerBuilder materialises one Directory tree: a mkdir per directory,
// a hardlink from the file cache per file, a symlink per symlink. All
// operations go through directory fds, so no path is resolved twice
// and no component is followed as a symlink.
type layerBuilder struct {
	ctx   context.Context
	t     tree
	files *FileSet
	stats LayerStats
	ops   int
}

func buildLayer(ctx context.Context, t tree, root *dirInfo, dst string, files *FileSet) (LayerStats, error) {
	if err := unix.Mkdir(dst, layerDirBuildMode); err != nil {
		return LayerStats{}, util.StatusWrapWithCode(err, codes.Internal, "Failed to create layer directory")
	}
	fd, err := unix.Open(dst, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return LayerStats{}, util.StatusWrapWithCode(err, codes.Internal, "Failed to open layer directory")
	}
	b := &layerBuilder{ctx: ctx, t: t, files: files}
	b.stats.Inodes = 1
	err = b.fill(fd, root, "")
	unix.Close(fd)
	if err != nil {
		return LayerStats{}, err
	}
	if err := unix.Chmod(dst, layerDirMode); err != nil {
		return LayerStats{}, util.StatusWrapWithCode(err, codes.Internal, "Failed to make layer directory read-only")
	}
	return b.stats, nil
}

func (b *layerBuilder) fill(fd int, di *dirInfo, dirPath string) error {
	dir := di.dir
	for i, f := range dir.Files {
		if err := b.files.Link(FileKey{Digest: di.fileDigests[i], Executable: f.IsExecutable}, fd, f.Name); err != nil {
			return util.StatusWrapf(err, "Layer path %q", joinPath(dirPath, f.Name))
		}
		b.stats.Bytes += di.fileDigests[i].GetSizeBytes()
	}
	for _, s := range dir.Symlinks {
		if err := unix.Symlinkat(s.Target, fd, s.Name); err != nil {
			return util.StatusWrapfWithCode(err, codes.Internal, "Failed to create symlink %q", joinPath(dirPath, s.Name))
		}
	}
	b.stats.Inodes += int64(len(dir.Files) + len(dir.Symlinks) + len(dir.Directories))
	b.ops += len(dir.Files) + len(dir.Symlinks) + len(dir.Directories)
	if b.ops >= 1024 {
		// Cancellation is checked now and then, not per syscall.
		b.ops = 0
		if err := b.ctx.Err(); err != nil {
			return util.StatusFromContext(b.ctx)
		}
	}
	for i, c := range dir.Directories {
		childPath := joinPath(dirPath, c.Name)
		if err := unix.Mkdirat(fd, c.Name, layerDirBuildMode); err != nil {
			return util.StatusWrapfWithCode(err, codes.Internal, "Failed to create directory %q", childPath)
		}
		cfd, err := unix.Openat(fd, c.Name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return util.StatusWrapfWithCode(err, codes.Internal, "Failed to open directory %q", childPath)
		}
		err = b.fill(cfd, b.t[di.dirDigests[i]], childPath)
		unix.Close(cfd)
		if err != nil {
			return err
		}
		if err := unix.Fchmodat(fd, c.Name, layerDirMode, 0); err != nil {
			return util.StatusWrapfWithCode(err, codes.Internal, "Failed to make directory %q read-only", childPath)
		}
	}
	return nil
}

// collectFileKeys adds the files of every directory of the tree at
// root to keys, visiting each distinct Directory once.
func collectFileKeys(t tree, root *dirInfo, seen map[*dirInfo]bool, keys map[FileKey]struct{}) {
	if seen[root] {
		return
	}
	seen[root] = true
	for i, f := range root.dir.Files {
		keys[FileKey{Digest: root.fileDigests[i], Executable: f.IsExecutable}] = struct{}{}
	}
	for _, c := range root.dirDigests {
		collectFileKeys(t, t[c], seen, keys)
	}
}
