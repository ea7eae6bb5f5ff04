package layers

import (
	"context"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/internal/parallel"
	"github.com/bitzel/bitzel-worker/storage"
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

// directoryMode is the mode of a layer directory: the permission bits
// of its unix_mode node property when the client sets it (a BitBake
// client sends its build tree's 0755), else read-only. The mode cannot
// open the layer to writes: actions reach it only as an overlay lower,
// which is never written.
func directoryMode(dir *remoteexecution.Directory) uint32 {
	if m := dir.GetNodeProperties().GetUnixMode(); m != nil {
		return m.GetValue() & 0o777
	}
	return layerDirMode
}

// layerBuilder materialises one Directory tree: a mkdir per directory,
// a hardlink from the file cache per file, a symlink per symlink. All
// operations go through directory fds, so no path is resolved twice
// and no component is followed as a symlink.
type layerBuilder struct {
	owner *Owner
	ctx   context.Context
	t     tree
	files *FileSet
	stats LayerStats
	ops   int
}

func buildLayer(ctx context.Context, t tree, root *dirInfo, dst string, files *FileSet, owner *Owner) (LayerStats, error) {
	if err := unix.Mkdir(dst, layerDirBuildMode); err != nil {
		return LayerStats{}, storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to create layer directory")
	}
	if owner != nil {
		if err := unix.Lchown(dst, owner.UID, owner.GID); err != nil {
			return LayerStats{}, storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to give the layer directory to its owner")
		}
	}
	fd, err := unix.Open(dst, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return LayerStats{}, storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to open layer directory")
	}
	b := &layerBuilder{ctx: ctx, t: t, files: files, owner: owner}
	b.stats.Inodes = 1
	err = b.fillTop(fd, root)
	unix.Close(fd)
	if err != nil {
		return LayerStats{}, err
	}
	if err := unix.Chmod(dst, directoryMode(root.dir)); err != nil {
		return LayerStats{}, storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to make layer directory read-only")
	}
	return b.stats, nil
}

// fillTop fills the layer's root and builds its subdirectories with
// two goroutines: entries of different directories don't contend for
// one directory lock, so a second core helps a little.
func (b *layerBuilder) fillTop(fd int, di *dirInfo) error {
	dir := di.dir
	if len(dir.Directories) < 2 {
		return b.fill(fd, di, "")
	}
	top := &dirInfo{dir: &remoteexecution.Directory{Files: dir.Files, Symlinks: dir.Symlinks}, fileDigests: di.fileDigests}
	if err := b.fill(fd, top, ""); err != nil {
		return err
	}
	b.stats.Inodes += int64(len(dir.Directories))
	builders := make([]*layerBuilder, len(dir.Directories))
	err := parallel.Run(b.ctx, 2, len(dir.Directories), func(ctx context.Context, i int) error {
		c := dir.Directories[i]
		sub := &layerBuilder{ctx: ctx, t: b.t, files: b.files, owner: b.owner}
		builders[i] = sub
		return sub.subdirectory(fd, c.Name, b.t[di.dirDigests[i]], c.Name)
	})
	for _, sub := range builders {
		if sub != nil {
			b.stats.Bytes += sub.stats.Bytes
			b.stats.Inodes += sub.stats.Inodes
		}
	}
	return err
}

func (b *layerBuilder) subdirectory(fd int, name string, child *dirInfo, childPath string) error {
	if err := unix.Mkdirat(fd, name, layerDirBuildMode); err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to create directory %q", childPath)
	}
	if b.owner != nil {
		if err := unix.Fchownat(fd, name, b.owner.UID, b.owner.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to give directory %q to its owner", childPath)
		}
	}
	cfd, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to open directory %q", childPath)
	}
	err = b.fill(cfd, child, childPath)
	unix.Close(cfd)
	if err != nil {
		return err
	}
	if err := unix.Fchmodat(fd, name, directoryMode(child.dir), 0); err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to make directory %q read-only", childPath)
	}
	return nil
}

func (b *layerBuilder) fill(fd int, di *dirInfo, dirPath string) error {
	dir := di.dir
	for i, f := range dir.Files {
		if err := b.files.Link(fileKeyOf(di.fileDigests[i], f), fd, f.Name); err != nil {
			return util.StatusWrapf(err, "Layer path %q", joinPath(dirPath, f.Name))
		}
		b.stats.Bytes += di.fileDigests[i].GetSizeBytes()
	}
	for _, s := range dir.Symlinks {
		if err := unix.Symlinkat(s.Target, fd, s.Name); err != nil {
			return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to create symlink %q", joinPath(dirPath, s.Name))
		}
		// A symlink's owner matters to lchown and to sticky
		// directories; it goes to the action's root like the rest.
		if b.owner != nil {
			if err := unix.Fchownat(fd, s.Name, b.owner.UID, b.owner.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to give symlink %q to its owner", joinPath(dirPath, s.Name))
			}
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
		if err := b.subdirectory(fd, c.Name, b.t[di.dirDigests[i]], joinPath(dirPath, c.Name)); err != nil {
			return err
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
		keys[fileKeyOf(root.fileDigests[i], f)] = struct{}{}
	}
	for _, c := range root.dirDigests {
		collectFileKeys(t, t[c], seen, keys)
	}
}
