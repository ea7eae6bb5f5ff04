package layers

import (
	"fmt"
	"strings"
	"sync"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layerproperty"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/status"
)

// dirInfo is a Directory message as fetched and checked on its own,
// shared by every tree that contains it (it is content-addressed, so
// everything derived from it is the same wherever it appears).
type dirInfo struct {
	digest digest.Digest
	dir    *remoteexecution.Directory
	// protoSize is the encoded size, used to bound the cache.
	protoSize int

	// Parsed digests, aligned with dir.Files and dir.Directories.
	fileDigests []digest.Digest
	dirDigests  []digest.Digest

	// localErr is the first problem found in this message alone,
	// with a path relative to this directory.
	localErr *treeError
	// climb is how many levels above this directory the worst of its
	// own symlinks reaches (0 when none leaves it upwards).
	climb     int
	climbPath string
	// absolutePath names the first of its symlinks with an absolute
	// target, "" when there is none.
	absolutePath string

	// layers is the parsed bitzel.layers property; layersErr is set
	// when the property is malformed. Only interpreted for
	// directories of the input root proper, not for listed trees.
	hasLayers bool
	layers    []digest.Digest
	layersErr string

	summaryOnce sync.Once
	summary     subtreeSummary
}

// subtreeSummary holds facts about a whole subtree, computed once per
// Directory digest, so that validating a tree costs O(distinct
// directories) rather than O(entries).
type subtreeSummary struct {
	files   int64 // regular files and symlinks, counted with multiplicity
	entries int64 // files, symlinks and directories
	bytes   int64 // file contents
	height  int   // 0 for a directory without subdirectories
	// climb is how far above the subtree's root its symlinks reach.
	climb     int
	climbPath string
	// absolutePath names the first symlink with an absolute target.
	absolutePath string
	// unionPath names the first descendant (not the root itself)
	// carrying bitzel.layers, "" when there is none.
	unionPath string
	err       *treeError
}

type treeError struct {
	path string
	msg  string
}

func (e *treeError) under(name string) *treeError {
	return &treeError{path: joinPath(name, e.path), msg: e.msg}
}

func (e *treeError) toStatus(prefix string) error {
	return invalidInputError(joinPath(prefix, e.path), "%s", e.msg)
}

func validName(name string) string {
	switch {
	case name == "":
		return "empty name"
	case name == "." || name == "..":
		return "name may not be \".\" or \"..\""
	case strings.ContainsAny(name, "/\x00"):
		return "name contains \"/\" or NUL"
	case len(name) > unix.NAME_MAX:
		// The kernel would refuse it with ENAMETOOLONG.
		return fmt.Sprintf("name is %d bytes, over the kernel's limit of %d (NAME_MAX)", len(name), unix.NAME_MAX)
	}
	return ""
}

// symlinkClimb resolves target lexically from the symlink's directory
// and returns how many levels above that directory it gets at its
// highest point. "a/../../x" climbs 1: Clean-style resolution would
// pop above the start, which is what makes it escape.
func symlinkClimb(target string) int {
	depth, lowest := 0, 0
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			lowest = min(lowest, depth)
		default:
			depth++
		}
	}
	return -lowest
}

// newDirInfo checks a Directory message on its own: names, order,
// collisions, digests and symlink targets.
func newDirInfo(d digest.Digest, dir *remoteexecution.Directory, protoSize int) *dirInfo {
	di := &dirInfo{digest: d, dir: dir, protoSize: protoSize}
	function := d.GetDigestFunction()
	names := &nameChecker{di: di, kinds: make(map[string]string, len(dir.Files)+len(dir.Directories)+len(dir.Symlinks))}
	di.fileDigests = make([]digest.Digest, len(dir.Files))
	for i, f := range dir.Files {
		if i > 0 {
			names.check("file", f.Name, dir.Files[i-1].Name)
		} else {
			names.check("file", f.Name, "")
		}
		di.fileDigests[i] = di.childDigest(function, f.Name, f.Digest)
	}
	di.dirDigests = make([]digest.Digest, len(dir.Directories))
	for i, c := range dir.Directories {
		if i > 0 {
			names.check("directory", c.Name, dir.Directories[i-1].Name)
		} else {
			names.check("directory", c.Name, "")
		}
		di.dirDigests[i] = di.childDigest(function, c.Name, c.Digest)
	}
	for i, s := range dir.Symlinks {
		if i > 0 {
			names.check("symlink", s.Name, dir.Symlinks[i-1].Name)
		} else {
			names.check("symlink", s.Name, "")
		}
		di.checkSymlink(s)
	}
	di.readLayersProperty(function)
	return di
}

// fail records the first problem of the Directory itself, at path p.
func (di *dirInfo) fail(p, format string, args ...any) {
	if di.localErr == nil {
		di.localErr = &treeError{path: p, msg: fmt.Sprintf(format, args...)}
	}
}

// nameChecker checks a Directory's entry names: valid, sorted and
// unique within their kind, and not of two kinds at once.
type nameChecker struct {
	di    *dirInfo
	kinds map[string]string
}

// check checks name, an entry of kind following previous ("" for the
// first of its kind).
func (n *nameChecker) check(kind, name, previous string) {
	if msg := validName(name); msg != "" {
		n.di.fail(name, "%s", msg)
		return
	}
	if previous != "" && name <= previous {
		if name == previous {
			n.di.fail(name, "duplicate %s name", kind)
		} else {
			n.di.fail(name, "%s names are not sorted (%s comes after %s)", kind, quotePath(name), quotePath(previous))
		}
	}
	if other, ok := n.kinds[name]; ok && other != kind {
		n.di.fail(name, "name is both a %s and a %s", other, kind)
	}
	n.kinds[name] = kind
}

// childDigest is the digest of the entry name, or the zero digest
// with the problem recorded.
func (di *dirInfo) childDigest(function digest.Function, name string, d *remoteexecution.Digest) digest.Digest {
	cd, err := function.NewDigestFromProto(d)
	if err != nil {
		di.fail(name, "invalid digest: %s", status.Convert(err).Message())
		return digest.BadDigest
	}
	return cd
}

// checkSymlink checks a symlink's target, and records how far above its
// directory it climbs and whether it is absolute.
func (di *dirInfo) checkSymlink(s *remoteexecution.SymlinkNode) {
	switch {
	case s.Target == "":
		di.fail(s.Name, "symlink has an empty target")
	case strings.ContainsRune(s.Target, 0):
		di.fail(s.Name, "symlink target contains NUL")
	case len(s.Target) >= unix.PathMax:
		di.fail(s.Name, "symlink target is %d bytes, over the kernel's limit of %d (PATH_MAX)", len(s.Target), unix.PathMax-1)
	case strings.HasPrefix(s.Target, "/"):
		// Whether that is allowed is the worker's setting (its
		// advertised symlink_absolute_path_strategy).
		if di.absolutePath == "" {
			di.absolutePath = s.Name
		}
	default:
		if c := symlinkClimb(s.Target); c > di.climb {
			di.climb, di.climbPath = c, s.Name
		}
	}
}

// readLayersProperty reads the Directory's bitzel.layers property, if
// it has one.
func (di *dirInfo) readLayersProperty(function digest.Function) {
	for _, p := range di.dir.GetNodeProperties().GetProperties() {
		if p.Name != layerproperty.Name {
			continue
		}
		if di.hasLayers {
			di.layersErr = "property " + layerproperty.Name + " is given more than once"
			return
		}
		di.hasLayers = true
		layers, err := layerproperty.Parse(function, p.Value)
		if err != nil {
			di.layersErr = status.Convert(err).Message()
		} else {
			di.layers = layers
		}
	}
}

// tree is the set of Directory messages reachable from a root,
// indexed by digest.
type tree map[digest.Digest]*dirInfo

// summarize computes (once per digest) the facts about the subtree of
// di. All its descendants must be present in t.
func (t tree) summarize(di *dirInfo) *subtreeSummary {
	di.summaryOnce.Do(func() {
		s := &di.summary
		if di.localErr != nil {
			s.err = di.localErr
			return
		}
		s.files = int64(len(di.dir.Files) + len(di.dir.Symlinks))
		s.entries = s.files + int64(len(di.dir.Directories))
		for _, f := range di.dir.Files {
			s.bytes += f.Digest.GetSizeBytes()
		}
		s.climb, s.climbPath = di.climb, di.climbPath
		s.absolutePath = di.absolutePath
		for i, c := range di.dir.Directories {
			child := t[di.dirDigests[i]]
			cs := t.summarize(child)
			if cs.err != nil {
				s.err = cs.err.under(c.Name)
				return
			}
			// Saturating: a small DAG can describe a tree with more
			// entries than an int64 holds, and must still fail the
			// entry limit rather than wrap around.
			s.files = satAdd(s.files, cs.files)
			s.entries = satAdd(s.entries, cs.entries)
			s.bytes = satAdd(s.bytes, cs.bytes)
			s.height = max(s.height, cs.height+1)
			if cs.climb-1 > s.climb {
				s.climb, s.climbPath = cs.climb-1, joinPath(c.Name, cs.climbPath)
			}
			if s.absolutePath == "" && cs.absolutePath != "" {
				s.absolutePath = joinPath(c.Name, cs.absolutePath)
			}
			if s.unionPath == "" {
				if child.hasLayers {
					s.unionPath = c.Name
				} else if cs.unionPath != "" {
					s.unionPath = joinPath(c.Name, cs.unionPath)
				}
			}
		}
	})
	return &di.summary
}

func satAdd(a, b int64) int64 {
	const limit = 1 << 62
	if a >= limit-b {
		return limit
	}
	return a + b
}
