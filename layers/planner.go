package layers

import (
	"fmt"
	"sort"
	"strings"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layerproperty"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// PlannerOptions bound and tune how an input root is cut into layers.
type PlannerOptions struct {
	// SplitThreshold: a non-root directory whose subtree holds at
	// least this many files and symlinks becomes its own mount.
	SplitThreshold int64
	// MaxMounts caps the number of mounts, the exec root included.
	MaxMounts int
	// MaxLowerDirs caps the lowerdirs of one mount (kernel: 500).
	MaxLowerDirs int
	// MaxDepth caps the directory depth of the input root, counting
	// listed trees at the depth where they are stacked.
	MaxDepth int
	// MaxEntries caps files, symlinks and directories in total.
	MaxEntries int64
	// AllowAbsoluteSymlinks accepts symlinks with absolute targets in
	// input roots (symlink_absolute_path_strategy ALLOWED). They point
	// into the sandbox's own view (/usr of the host userland, say);
	// the worker never follows a symlink of an input itself. Relative
	// targets that climb out of the input root are refused either way.
	AllowAbsoluteSymlinks bool
}

// DefaultPlannerOptions are used for zero fields.
var DefaultPlannerOptions = PlannerOptions{
	SplitThreshold: 1000,
	MaxMounts:      256,
	MaxLowerDirs:   500,
	MaxDepth:       256,
	MaxEntries:     10_000_000,
}

func (o PlannerOptions) withDefaults() PlannerOptions {
	d := DefaultPlannerOptions
	if o.SplitThreshold > 0 {
		d.SplitThreshold = o.SplitThreshold
	}
	if o.MaxMounts > 0 {
		d.MaxMounts = o.MaxMounts
	}
	if o.MaxLowerDirs > 0 {
		d.MaxLowerDirs = min(o.MaxLowerDirs, 500)
	}
	if o.MaxDepth > 0 {
		d.MaxDepth = o.MaxDepth
	}
	if o.MaxEntries > 0 {
		d.MaxEntries = o.MaxEntries
	}
	d.AllowAbsoluteSymlinks = o.AllowAbsoluteSymlinks
	return d
}

// plannedLayer is one lowerdir: a layer key and the Directory (real or
// rewritten) whose materialisation it is.
type plannedLayer struct {
	key  digest.Digest
	root *dirInfo
}

// plannedMount is an overlay at path (relative to the exec root) whose
// lowerdirs are layers, topmost first.
type plannedMount struct {
	path   string
	layers []plannedLayer
}

// plan is the result of planning an input root. t holds every
// Directory the layers refer to, rewritten ones included.
type plan struct {
	mounts    []plannedMount
	t         tree
	sizeBytes int64 // encoded size of the Directories in t
}

// planInputRoot validates the input root and decides its mounts.
//
// The rule: the root is always mount 0. A non-root directory becomes
// its own mount when its subtree holds at least SplitThreshold files
// and symlinks, or when it carries the node property bitzel.layers;
// its parent's layer then holds an empty directory at that name, which
// the child overlay is mounted on. When there are more candidates than
// MaxMounts allows, directories with bitzel.layers are kept (they
// change what the tree means) and the largest of the others, by file
// count, are split; the rest stay in their parent's layer. No
// directory is split out of the own entries of a bitzel.layers
// directory, as a mount there would hide what the listed trees hold
// at that path.
//
// A layer's key is the digest of the Directory message that describes
// exactly what is materialised in it: the real digest when nothing
// inside was split out, otherwise that of the Directory rewritten with
// split children replaced by the empty Directory. Identical content
// thus shares one layer whatever tree it came from.
//
// A bitzel.layers directory is a mount whose lowerdirs are its own
// entries as a layer (omitted when it has none), then each listed
// tree, materialised whole, in the listed order.
func planInputRoot(t tree, root digest.Digest, o PlannerOptions) (*plan, error) {
	rootInfo := t[root]
	s := t.summarize(rootInfo)
	if s.err != nil {
		return nil, s.err.toStatus("")
	}
	if s.climb > 0 {
		return nil, invalidInputError(s.climbPath, "symlink escapes the input root")
	}
	if s.absolutePath != "" && !o.AllowAbsoluteSymlinks {
		return nil, invalidInputError(s.absolutePath, "symlink target is absolute, which this worker does not allow")
	}
	if s.height+1 > o.MaxDepth {
		return nil, status.Errorf(codes.InvalidArgument, "input root: directory depth %d exceeds the limit of %d", s.height+1, o.MaxDepth)
	}

	// Checked before walking, which is bounded by the entry count.
	if s.entries > o.MaxEntries {
		return nil, status.Errorf(codes.InvalidArgument, "input root: %d entries exceed the limit of %d", s.entries, o.MaxEntries)
	}
	p := &planner{t: t, o: o, entries: s.entries}
	if err := p.walk(rootInfo, "", 0, rootInfo.hasLayers); err != nil {
		return nil, err
	}
	if p.entries > o.MaxEntries {
		return nil, status.Errorf(codes.InvalidArgument, "input root: %d entries exceed the limit of %d", p.entries, o.MaxEntries)
	}
	if len(p.unions)+1 > o.MaxMounts {
		return nil, status.Errorf(codes.InvalidArgument, "input root: %d %s directories need more mounts than the limit of %d", len(p.unions), layerproperty.Name, o.MaxMounts)
	}

	// Largest subtrees first; path order breaks ties so plans are
	// deterministic.
	sort.SliceStable(p.splits, func(i, j int) bool {
		if p.splits[i].files != p.splits[j].files {
			return p.splits[i].files > p.splits[j].files
		}
		return p.splits[i].path < p.splits[j].path
	})
	mountPaths := map[string]*dirInfo{}
	for _, u := range p.unions {
		mountPaths[u.path] = u.di
	}
	for _, c := range p.splits {
		if len(mountPaths)+1 >= o.MaxMounts {
			break
		}
		mountPaths[c.path] = c.di
	}

	pl := &plan{t: t}
	r := &rewriter{t: t, mounts: mountPaths, memo: map[string]digest.Digest{}}
	paths := []string{""}
	for mp := range mountPaths {
		paths = append(paths, mp)
	}
	// Parents before children: a prefix sorts first.
	sort.Strings(paths)
	for _, mp := range paths {
		di := rootInfo
		if mp != "" {
			di = mountPaths[mp]
		}
		m := plannedMount{path: mp}
		if di.hasLayers {
			if len(di.dir.Files)+len(di.dir.Directories)+len(di.dir.Symlinks) > 0 || len(di.layers) == 0 {
				own := r.stripLayersProperty(di)
				m.layers = append(m.layers, plannedLayer{key: own.digest, root: own})
			}
			for _, l := range di.layers {
				m.layers = append(m.layers, plannedLayer{key: l, root: t[l]})
			}
		} else {
			key := r.materialised(mp, di)
			m.layers = append(m.layers, plannedLayer{key: key, root: t[key]})
		}
		pl.mounts = append(pl.mounts, m)
	}
	return pl, nil
}

type splitCandidate struct {
	path  string
	di    *dirInfo
	files int64
}

type planner struct {
	t       tree
	o       PlannerOptions
	unions  []splitCandidate
	splits  []splitCandidate
	entries int64
}

// walk visits the directories that can yield mounts: subtrees with
// fewer files than the threshold and no union below are skipped, so
// planning costs far less than the tree has entries.
func (p *planner) walk(di *dirInfo, dirPath string, depth int, isUnion bool) error {
	if isUnion {
		return p.checkUnion(di, dirPath, depth)
	}
	for i, c := range di.dir.Directories {
		child := p.t[di.dirDigests[i]]
		cs := p.t.summarize(child)
		childPath := joinPath(dirPath, c.Name)
		if child.hasLayers {
			p.unions = append(p.unions, splitCandidate{childPath, child, cs.files})
			if err := p.walk(child, childPath, depth+1, true); err != nil {
				return err
			}
			continue
		}
		if cs.files >= p.o.SplitThreshold {
			p.splits = append(p.splits, splitCandidate{childPath, child, cs.files})
		}
		if cs.files >= p.o.SplitThreshold || cs.unionPath != "" {
			if err := p.walk(child, childPath, depth+1, false); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *planner) checkUnion(di *dirInfo, dirPath string, depth int) error {
	if di.layersErr != "" {
		return invalidInputError(dirPath, "%s", di.layersErr)
	}
	s := p.t.summarize(di)
	if s.unionPath != "" {
		return invalidInputError(joinPath(dirPath, s.unionPath),
			"%s directory is nested inside the own entries of %s directory %q: its layers could not be stacked without hiding the outer directory's listed trees",
			layerproperty.Name, layerproperty.Name, dirPath)
	}
	lower := len(di.layers)
	if len(di.dir.Files)+len(di.dir.Directories)+len(di.dir.Symlinks) > 0 {
		lower++
	}
	if lower > p.o.MaxLowerDirs {
		return invalidInputError(dirPath, "%s: %d lowerdirs exceed the limit of %d", layerproperty.Name, lower, p.o.MaxLowerDirs)
	}
	for _, l := range di.layers {
		where := fmt.Sprintf("%s [%s %s/%d]", dirPath, layerproperty.Name, l.GetHashString(), l.GetSizeBytes())
		li, ok := p.t[l]
		if !ok {
			return status.Errorf(codes.Internal, "listed tree %s was not fetched", l)
		}
		ls := p.t.summarize(li)
		if ls.err != nil {
			return invalidInputError(joinPath(where, ls.err.path), "%s", ls.err.msg)
		}
		if ls.climb > depth {
			return invalidInputError(joinPath(where, ls.climbPath), "symlink escapes the input root")
		}
		if ls.absolutePath != "" && !p.o.AllowAbsoluteSymlinks {
			return invalidInputError(joinPath(where, ls.absolutePath), "symlink target is absolute, which this worker does not allow")
		}
		if depth+ls.height+1 > p.o.MaxDepth {
			return invalidInputError(where, "directory depth %d exceeds the limit of %d", depth+ls.height+1, p.o.MaxDepth)
		}
		p.entries = satAdd(p.entries, ls.entries)
	}
	return nil
}

// rewriter computes the Directory messages of layers that had
// children split out.
type rewriter struct {
	t      tree
	mounts map[string]*dirInfo
	memo   map[string]digest.Digest
}

// materialised returns the key of what is materialised at dirPath:
// di itself when no mount lies strictly below dirPath, otherwise a
// rewritten Directory (added to the tree).
func (r *rewriter) materialised(dirPath string, di *dirInfo) digest.Digest {
	if d, ok := r.memo[dirPath]; ok {
		return d
	}
	if !r.hasMountBelow(dirPath) {
		return di.digest
	}
	dir := proto.Clone(di.dir).(*remoteexecution.Directory)
	for i, c := range dir.Directories {
		childPath := joinPath(dirPath, c.Name)
		var d digest.Digest
		if _, ok := r.mounts[childPath]; ok {
			d = r.add(&remoteexecution.Directory{}, di.digest.GetDigestFunction()).digest
		} else {
			d = r.materialised(childPath, r.t[di.dirDigests[i]])
		}
		c.Digest = d.GetProto()
	}
	d := r.add(dir, di.digest.GetDigestFunction()).digest
	r.memo[dirPath] = d
	return d
}

func (r *rewriter) hasMountBelow(dirPath string) bool {
	prefix := dirPath + "/"
	for mp := range r.mounts {
		if (dirPath == "" && mp != "") || strings.HasPrefix(mp, prefix) {
			return true
		}
	}
	return false
}

// stripLayersProperty returns the union directory's own entries as a
// Directory of their own: the property describes the stacking, not
// the entries, and dropping it lets identical entries share a layer.
func (r *rewriter) stripLayersProperty(di *dirInfo) *dirInfo {
	dir := proto.Clone(di.dir).(*remoteexecution.Directory)
	if np := dir.NodeProperties; np != nil {
		var kept []*remoteexecution.NodeProperty
		for _, p := range np.Properties {
			if p.Name != layerproperty.Name {
				kept = append(kept, p)
			}
		}
		np.Properties = kept
		if len(kept) == 0 && np.Mtime == nil && np.UnixMode == nil {
			dir.NodeProperties = nil
		}
	}
	return r.add(dir, di.digest.GetDigestFunction())
}

func (r *rewriter) add(dir *remoteexecution.Directory, function digest.Function) *dirInfo {
	data, _ := proto.MarshalOptions{Deterministic: true}.Marshal(dir)
	g := function.NewGenerator(int64(len(data)))
	g.Write(data)
	d := g.Sum()
	if di, ok := r.t[d]; ok {
		return di
	}
	di := newDirInfo(d, dir, len(data))
	r.t[d] = di
	return di
}
