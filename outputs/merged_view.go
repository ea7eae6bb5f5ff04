package outputs

import (
	"errors"
	"os"
	"path/filepath"
	"sort"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The merged view of the exec root is computed logically, after the
// sandbox and its mounts are gone: each mount's upperdir is laid over
// the Directory trees of its layers with overlayfs semantics, as with
// the "userxattr" mount option:
//   - a character device 0/0 in an upperdir is a whiteout: the name is
//     deleted;
//   - an upper directory with xattr user.overlay.opaque = "y" (or "x")
//     hides everything below it;
//   - redirect_dir and metacopy are off, so an upper file is always a
//     full copy and a renamed directory is a full copy too;
//   - among lowerdirs, a non-directory hides everything below it, and
//     directories of one name merge until one is hidden that way.
// Files absent from the upperdirs come from the input tree: their
// digests are already known, so they are neither read nor uploaded.

type vnodeKind int

const (
	kindFile vnodeKind = iota
	kindDirectory
	kindSymlink
)

// vnode is one entry of the merged view.
type vnode struct {
	kind vnodeKind
	// hostPath is where the entry lives on disk: in an upperdir when
	// fromUpper, else in a layer.
	hostPath  string
	fromUpper bool

	// Lower files: known digest. Upper files: hashed on demand.
	digest digest.Digest
	// size of an upper file, from lstat: checked against the output
	// budget before any byte is read.
	size       int64
	executable bool

	target string // symlinks

	dir *vdir // directories
}

// vdir is a directory of the merged view.
type vdir struct {
	relPath string // from the exec root
	upper   string // upper directory at this position, "" if none
	opaque  bool   // the upper directory hides the lowers
	lowers  []lowerRef
}

type lowerRef struct {
	dir      layers.Directory
	hostPath string
}

// mergedView resolves paths of the exec root as the action left it.
type mergedView struct {
	root   *layers.InputRoot
	uppers []string
	// mountAt maps a mount's path to its index.
	mountAt map[string]int
}

func newMergedView(root *layers.InputRoot, uppers []string) (*mergedView, error) {
	if len(uppers) != len(root.Mounts) {
		return nil, status.Errorf(codes.InvalidArgument, "%d upper directories given for %d mounts", len(uppers), len(root.Mounts))
	}
	mv := &mergedView{root: root, uppers: uppers, mountAt: map[string]int{}}
	for i, m := range root.Mounts {
		mv.mountAt[m.Path] = i
	}
	return mv, nil
}

// mountDir is the merged root directory of mount i.
func (mv *mergedView) mountDir(i int) *vdir {
	d := &vdir{relPath: mv.root.Mounts[i].Path, upper: mv.uppers[i]}
	for j, l := range mv.root.LayerDirectories(i) {
		d.lowers = append(d.lowers, lowerRef{dir: l, hostPath: mv.root.Mounts[i].Layers[j]})
	}
	return d
}

func isOpaque(p string) bool {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(p, "user.overlay.opaque", buf)
	return err == nil && n == 1 && (buf[0] == 'y' || buf[0] == 'x')
}

// children lists the merged entries of d, sorted by name.
func (mv *mergedView) children(d *vdir) (map[string]*vnode, []string, error) {
	nodes := map[string]*vnode{}
	hidden := map[string]bool{}
	// open records directory names to which lower directories still
	// merge.
	open := map[string]bool{}
	if d.upper != "" {
		entries, err := os.ReadDir(d.upper)
		if errors.Is(err, unix.ENAMETOOLONG) {
			return nil, nil, pathTooLong(d.relPath)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, nil, util.StatusWrapfWithCode(err, codes.Internal, "Failed to read upper directory of %q", d.relPath)
		}
		for _, e := range entries {
			n, err := mv.upperNode(d, e.Name())
			if err != nil {
				return nil, nil, err
			}
			if n == nil {
				hidden[e.Name()] = true
				continue
			}
			nodes[e.Name()] = n
			open[e.Name()] = n.kind == kindDirectory && !n.dir.opaque
		}
	}
	if !d.opaque {
		for _, l := range d.lowers {
			mv.mergeLower(d, l, nodes, hidden, open)
		}
	}
	// Mounts below d replace whatever the parent holds there.
	for i, m := range mv.root.Mounts {
		if i > 0 && filepath.Dir(m.Path) == dirOrDot(d.relPath) {
			name := filepath.Base(m.Path)
			nodes[name] = &vnode{kind: kindDirectory, hostPath: mv.uppers[i], dir: mv.mountDir(i)}
		}
	}
	names := make([]string, 0, len(nodes))
	for n := range nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	return nodes, names, nil
}

func dirOrDot(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// upperNode describes the upper entry name of d; nil for a whiteout
// (a character device 0/0) or another entry kind outputs cannot hold
// (devices, fifos, sockets), which all hide the lowers' entry.
func (mv *mergedView) upperNode(d *vdir, name string) (*vnode, error) {
	p := filepath.Join(d.upper, name)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if err == unix.ENAMETOOLONG {
			return nil, pathTooLong(joinPath(d.relPath, name))
		}
		return nil, util.StatusWrapfWithCode(err, codes.Internal, "Failed to stat %q", joinPath(d.relPath, name))
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return &vnode{kind: kindFile, hostPath: p, fromUpper: true, executable: st.Mode&0o111 != 0, size: st.Size}, nil
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			return nil, util.StatusWrapfWithCode(err, codes.Internal, "Failed to read symlink %q", joinPath(d.relPath, name))
		}
		return &vnode{kind: kindSymlink, hostPath: p, fromUpper: true, target: target}, nil
	case unix.S_IFDIR:
		child := &vdir{relPath: joinPath(d.relPath, name), upper: p, opaque: isOpaque(p)}
		return &vnode{kind: kindDirectory, hostPath: p, fromUpper: true, dir: child}, nil
	}
	return nil, nil
}

// mergeLower adds the entries of one lower directory below the ones
// already decided by the upper and higher lowers.
func (mv *mergedView) mergeLower(d *vdir, l lowerRef, nodes map[string]*vnode, hidden, open map[string]bool) {
	dir := l.dir.Message()
	take := func(name string) bool {
		_, decided := nodes[name]
		return !decided && !hidden[name]
	}
	for i, f := range dir.Files {
		if take(f.Name) {
			nodes[f.Name] = &vnode{kind: kindFile, hostPath: filepath.Join(l.hostPath, f.Name), digest: l.dir.FileDigest(i), executable: f.IsExecutable}
		}
		open[f.Name] = false
	}
	for _, s := range dir.Symlinks {
		if take(s.Name) {
			nodes[s.Name] = &vnode{kind: kindSymlink, hostPath: filepath.Join(l.hostPath, s.Name), target: s.Target}
		}
		open[s.Name] = false
	}
	for i, c := range dir.Directories {
		ref := lowerRef{dir: l.dir.Child(i), hostPath: filepath.Join(l.hostPath, c.Name)}
		if take(c.Name) {
			child := &vdir{relPath: joinPath(d.relPath, c.Name)}
			nodes[c.Name] = &vnode{kind: kindDirectory, hostPath: ref.hostPath, dir: child}
			open[c.Name] = true
		}
		if open[c.Name] {
			nodes[c.Name].dir.lowers = append(nodes[c.Name].dir.lowers, ref)
		}
	}
}

// lookup resolves a path relative to the exec root without following
// symlinks; nil when nothing is there.
func (mv *mergedView) lookup(relPath string) (*vnode, error) {
	n := &vnode{kind: kindDirectory, hostPath: mv.uppers[0], dir: mv.mountDir(0)}
	if relPath == "" {
		return n, nil
	}
	for _, name := range splitPath(relPath) {
		if n.kind != kindDirectory {
			return nil, nil
		}
		nodes, _, err := mv.children(n.dir)
		if err != nil {
			return nil, err
		}
		if n = nodes[name]; n == nil {
			return nil, nil
		}
	}
	return n, nil
}

func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	var out []string
	for len(p) > 0 {
		i := 0
		for i < len(p) && p[i] != '/' {
			i++
		}
		out = append(out, p[:i])
		if i == len(p) {
			break
		}
		p = p[i+1:]
	}
	return out
}

// fileNodeProperties returns the properties Command.output_node_properties
// asks for, read from the entry's inode.
func nodeProperties(n *vnode, want map[string]bool) (*remoteexecution.NodeProperties, error) {
	if !want["unix_mode"] && !want["mtime"] {
		return nil, nil
	}
	var st unix.Stat_t
	if err := unix.Lstat(n.hostPath, &st); err != nil {
		if err == unix.ENAMETOOLONG {
			return nil, pathTooLong(n.hostPath)
		}
		return nil, util.StatusWrapfWithCode(err, codes.Internal, "Failed to stat %q", n.hostPath)
	}
	return statNodeProperties(&st, want), nil
}

// pathTooLong is the action's fault, not the worker's: its outputs
// nest deeper than the kernel lets the worker name them.
func pathTooLong(relPath string) error {
	return status.Errorf(codes.InvalidArgument, "Output path %s is longer than the kernel's PATH_MAX (%d bytes) allows outputs to be read", shortPath(relPath), unix.PathMax)
}
