// Package images makes container images that the operator provides
// locally (OCI image layouts and `docker save` archives) into overlay
// lowerdirs for actions whose platform names container-image.
package images

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Whiteout names of the OCI image layer format.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// OpaqueXattr marks an overlay directory that hides the layers below
// it. The user. form, as the sandbox mounts its overlays with
// userxattr (rootless too) and the merged view of package outputs
// reads this name.
const OpaqueXattr = "user.overlay.opaque"

// Extract unpacks an uncompressed layer tarball into dir, an existing
// empty directory, as an overlay lowerdir:
//   - an absolute path or one with ".." that climbs out is refused
//     (the whole layer), as no well-formed image has one;
//   - every entry is created through its parent opened with
//     RESOLVE_BENEATH, so a symlink in the layer (which may point
//     anywhere: it is resolved inside the sandbox later) is never
//     followed out of dir, and a write through one is refused;
//   - character and block devices and FIFOs are skipped: an action's
//     /dev is the sandbox's own, and a device node from an image
//     would be a way to the host's devices;
//   - whiteouts become overlay whiteouts (a 0/0 character device,
//     which an unprivileged user may create since Linux 5.8) and
//     opaque markers the user.overlay.opaque xattr;
//   - set-user-ID, set-group-ID and sticky bits are dropped, and
//     owners are not copied: the worker's user owns every file.
func Extract(r io.Reader, dir string) error {
	root, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return status.Errorf(codes.Internal, "Failed to open layer directory %q: %v", dir, err)
	}
	defer unix.Close(root)
	x := &extractor{root: root}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return status.Errorf(codes.FailedPrecondition, "Layer is not a valid tar archive: %v", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
	// Directories get their modes last: a read-only directory of the
	// layer must still take the entries that follow it.
	for i := len(x.dirModes) - 1; i >= 0; i-- {
		d := x.dirModes[i]
		if err := x.chmod(d.path, d.mode); err != nil {
			return err
		}
	}
	return nil
}

type dirMode struct {
	path string
	mode uint32
}

type extractor struct {
	root     int
	dirModes []dirMode
}

// cleanName is the entry's path relative to the layer root, or an
// error for one that would land outside it.
func cleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", status.Errorf(codes.FailedPrecondition, "Layer entry %q is an absolute path", name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", status.Errorf(codes.FailedPrecondition, "Layer entry %q contains \"..\"", name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// openParent opens the directory holding rel, creating missing
// directories on the way, all beneath the layer root.
func (x *extractor) openParent(rel string) (int, string, error) {
	parent, leaf := path.Split(rel)
	parent = strings.TrimSuffix(parent, "/")
	if parent != "" {
		if err := x.mkdirAll(parent); err != nil {
			return -1, "", err
		}
	} else {
		parent = "."
	}
	fd, err := unix.Openat2(x.root, parent, &unix.OpenHow{
		Flags:   unix.O_DIRECTORY | unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, "", status.Errorf(codes.FailedPrecondition, "Layer entry %q: its parent %q is not a directory inside the layer: %v", rel, parent, err)
	}
	return fd, leaf, nil
}

func (x *extractor) mkdirAll(rel string) error {
	components := strings.Split(rel, "/")
	for i := range components {
		prefix := strings.Join(components[:i+1], "/")
		fd, err := unix.Openat2(x.root, prefix, &unix.OpenHow{
			Flags:   unix.O_DIRECTORY | unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err == nil {
			unix.Close(fd)
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return status.Errorf(codes.FailedPrecondition, "Layer path %q is not a directory inside the layer: %v", prefix, err)
		}
		parentFd, leaf, err := x.openParent(prefix)
		if err != nil {
			return err
		}
		err = unix.Mkdirat(parentFd, leaf, 0o755)
		unix.Close(parentFd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return status.Errorf(codes.Internal, "Failed to create layer directory %q: %v", prefix, err)
		}
	}
	return nil
}

func (x *extractor) chmod(rel string, mode uint32) error {
	fd, err := unix.Openat2(x.root, orDot(rel), &unix.OpenHow{
		Flags:   unix.O_DIRECTORY | unix.O_RDONLY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "Layer directory %q: %v", rel, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, mode); err != nil {
		return status.Errorf(codes.Internal, "Failed to chmod layer directory %q: %v", rel, err)
	}
	return nil
}

func orDot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

// permissions are the mode bits kept from an entry.
func permissions(hdr *tar.Header) uint32 {
	return uint32(hdr.Mode) & 0o777
}

func (x *extractor) entry(hdr *tar.Header, body io.Reader) error {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	if rel == "" {
		if hdr.Typeflag == tar.TypeDir {
			x.dirModes = append(x.dirModes, dirMode{"", permissions(hdr) | 0o700})
			return nil
		}
		return status.Errorf(codes.FailedPrecondition, "Layer entry %q names the layer root but is not a directory", hdr.Name)
	}
	base := path.Base(rel)
	if base == opaqueMarker {
		return x.markOpaque(path.Dir(rel), hdr.Name)
	}
	parentFd, leaf, err := x.openParent(rel)
	if err != nil {
		return err
	}
	defer unix.Close(parentFd)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return whiteout(parentFd, rel, hdr.Name)
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.directory(parentFd, leaf, rel, hdr)
	case tar.TypeReg, tar.TypeRegA:
		return regularFile(parentFd, leaf, rel, hdr, body)
	case tar.TypeSymlink:
		replace(parentFd, leaf)
		if err := unix.Symlinkat(hdr.Linkname, parentFd, leaf); err != nil {
			return status.Errorf(codes.Internal, "Failed to create layer symlink %q: %v", rel, err)
		}
	case tar.TypeLink:
		return x.hardLink(parentFd, leaf, rel, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		// Skipped: see Extract.
	default:
		return status.Errorf(codes.FailedPrecondition, "Layer entry %q has type %q, which is not supported", rel, string(hdr.Typeflag))
	}
	return nil
}

// markOpaque makes dir (relative to the layer, "." for its root) an
// opaque directory, for the marker entry name.
func (x *extractor) markOpaque(dir, name string) error {
	if dir != "." {
		if err := x.mkdirAll(dir); err != nil {
			return err
		}
	}
	fd, err := unix.Openat2(x.root, dir, &unix.OpenHow{
		Flags:   unix.O_DIRECTORY | unix.O_RDONLY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "Layer opaque marker %q: %v", name, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsetxattr(fd, OpaqueXattr, []byte("y"), 0); err != nil {
		return status.Errorf(codes.Internal, "Failed to mark layer directory %q opaque: %v", dir, err)
	}
	return nil
}

// whiteout turns the whiteout entry rel (named name in the tar) into
// overlayfs's: a 0/0 character device of the hidden name.
func whiteout(parentFd int, rel, name string) error {
	hidden := strings.TrimPrefix(path.Base(rel), whiteoutPrefix)
	if hidden == "" || hidden == "." || hidden == ".." {
		return status.Errorf(codes.FailedPrecondition, "Layer whiteout %q names nothing", name)
	}
	replace(parentFd, hidden)
	if err := unix.Mknodat(parentFd, hidden, unix.S_IFCHR, 0); err != nil {
		return status.Errorf(codes.Internal, "Failed to create the whiteout of %q: %v", path.Join(path.Dir(rel), hidden), err)
	}
	return nil
}

func (x *extractor) directory(parentFd int, leaf, rel string, hdr *tar.Header) error {
	if err := unix.Mkdirat(parentFd, leaf, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return status.Errorf(codes.Internal, "Failed to create layer directory %q: %v", rel, err)
	}
	// A later entry of the same name as a non-directory was
	// replaced; check this is one now.
	fd, err := unix.Openat2(parentFd, leaf, &unix.OpenHow{
		Flags:   unix.O_DIRECTORY | unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "Layer entry %q is a directory over something that is not: %v", rel, err)
	}
	unix.Close(fd)
	x.dirModes = append(x.dirModes, dirMode{rel, permissions(hdr) | 0o700})
	return nil
}

func regularFile(parentFd int, leaf, rel string, hdr *tar.Header, body io.Reader) error {
	replace(parentFd, leaf)
	fd, err := unix.Openat(parentFd, leaf, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return status.Errorf(codes.Internal, "Failed to create layer file %q: %v", rel, err)
	}
	f := fdWriter(fd)
	_, err = io.Copy(f, body)
	if err == nil {
		err = unix.Fchmod(fd, permissions(hdr))
	}
	unix.Close(fd)
	if err != nil {
		return status.Errorf(codes.Internal, "Failed to write layer file %q: %v", rel, err)
	}
	return nil
}

func (x *extractor) hardLink(parentFd int, leaf, rel, linkname string) error {
	target, err := cleanName(linkname)
	if err != nil || target == "" {
		return status.Errorf(codes.FailedPrecondition, "Layer hard link %q points to %q, outside the layer", rel, linkname)
	}
	targetParent, targetLeaf, err := x.openParent(target)
	if err != nil {
		return err
	}
	defer unix.Close(targetParent)
	replace(parentFd, leaf)
	// Flags 0: a link to a symlink links the symlink itself, never
	// what it points to.
	if err := unix.Linkat(targetParent, targetLeaf, parentFd, leaf, 0); err != nil {
		return status.Errorf(codes.FailedPrecondition, "Layer hard link %q to %q: %v", rel, linkname, err)
	}
	return nil
}

// replace removes what a later entry of the same layer replaces (tar
// semantics: the last entry of a name wins). A directory is only
// removed when empty; a non-empty one then makes the create fail.
func replace(parentFd int, leaf string) {
	if err := unix.Unlinkat(parentFd, leaf, 0); err != nil && errors.Is(err, unix.EISDIR) {
		unix.Unlinkat(parentFd, leaf, unix.AT_REMOVEDIR)
	}
}

type fdWriter int

func (f fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(int(f), p[n:])
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return n, fmt.Errorf("write: %w", err)
		}
		n += m
	}
	return n, nil
}
