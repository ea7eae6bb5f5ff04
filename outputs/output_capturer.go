package outputs

import (
	"context"
	"path"
	"sort"
	"strings"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/internal/parallel"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// OutputCapturer turns what an action left in its exec root into the
// output fields of an ActionResult, uploading what the CAS lacks.
type OutputCapturer interface {
	// Capture reads the outputs Command asks for from the merged view
	// of root with uppers[i] as the upperdir of root.Mounts[i], and
	// fills the output_* fields of the result (nothing else).
	Capture(ctx context.Context, instanceName digest.InstanceName, root *layers.InputRoot, uppers []string, command *remoteexecution.Command) (*remoteexecution.ActionResult, error)
	// UploadFile stores a plain file (e.g. a log) and returns its
	// digest.
	UploadFile(ctx context.Context, instanceName digest.InstanceName, digestFunction digest.Function, path string) (digest.Digest, error)
	// UploadBlob stores bytes held in memory (a short log).
	UploadBlob(ctx context.Context, instanceName digest.InstanceName, digestFunction digest.Function, data []byte) (digest.Digest, error)
}

// OutputCapturerOptions tune an OutputCapturer.
type OutputCapturerOptions struct {
	// SymlinkAbsolutePathStrategy is the one the worker advertises;
	// DISALLOWED makes outputs with absolute symlink targets fail.
	SymlinkAbsolutePathStrategy remoteexecution.SymlinkAbsolutePathStrategy_Value
	// HashParallelism bounds files hashed and uploaded at once.
	HashParallelism int
	// MaximumBytes bounds the bytes of the files one action wrote
	// into its outputs (what must be hashed and uploaded), and
	// MaximumEntries the files, directories and symlinks its outputs
	// list. 0: unlimited. Past either, Capture fails with
	// RESOURCE_EXHAUSTED before reading a byte.
	MaximumBytes   int64
	MaximumEntries int64
}

type outputCapturer struct {
	storage *storage.Storage
	options OutputCapturerOptions
}

// NewOutputCapturer creates an OutputCapturer writing to storage.
func NewOutputCapturer(storage *storage.Storage, options OutputCapturerOptions) OutputCapturer {
	if options.HashParallelism <= 0 {
		options.HashParallelism = 4
	}
	return &outputCapturer{storage: storage, options: options}
}

// outputPath resolves an output path against the working directory
// and refuses any that leaves the exec root.
func outputPath(workingDirectory, p string) (string, error) {
	if strings.HasPrefix(p, "/") || strings.HasPrefix(workingDirectory, "/") {
		return "", status.Errorf(codes.InvalidArgument, "Output path %q: absolute paths are not allowed", p)
	}
	joined := path.Clean(path.Join(workingDirectory, p))
	if joined == ".." || strings.HasPrefix(joined, "../") {
		return "", status.Errorf(codes.InvalidArgument, "Output path %q leaves the exec root", p)
	}
	if joined == "." {
		joined = ""
	}
	return joined, nil
}

type outputKind int

const (
	wantAny outputKind = iota
	wantFile
	wantDirectory
)

func (c *outputCapturer) Capture(ctx context.Context, instanceName digest.InstanceName, root *layers.InputRoot, uppers []string, command *remoteexecution.Command) (*remoteexecution.ActionResult, error) {
	mv, err := newMergedView(root, uppers)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, p := range command.OutputNodeProperties {
		want[p] = true
	}
	cs := &capture{
		oc:     c,
		mv:     mv,
		fn:     root.Root.GetDigestFunction(),
		want:   want,
		hashes: map[string][]*vnode{},
		names:  map[string]string{},
		result: &remoteexecution.ActionResult{},
		budget: outputBudget{
			maximumBytes:    c.options.MaximumBytes,
			maximumEntries:  c.options.MaximumEntries,
			maximumBlobSize: c.storage.MaximumBlobSizeBytes,
		},

		outputDirectoryFormat: command.OutputDirectoryFormat,
	}

	// REAPI 2.1+ clients send output_paths, and then the legacy
	// fields are to be ignored for what to capture; 2.0 clients (Bazel
	// 4.2.3) send only output_files and output_directories.
	type request struct {
		path string
		kind outputKind
	}
	var requests []request
	if len(command.OutputPaths) == 0 {
		for _, p := range command.OutputFiles {
			requests = append(requests, request{p, wantFile})
		}
		for _, p := range command.OutputDirectories {
			requests = append(requests, request{p, wantDirectory})
		}
	} else {
		for _, p := range command.OutputPaths {
			requests = append(requests, request{p, wantAny})
		}
	}
	// Symlinks also go to the per-kind fields of REAPI 2.0 for paths
	// the client listed in its legacy fields.
	legacyKind := map[string]outputKind{}
	for _, p := range command.OutputFiles {
		legacyKind[p] = wantFile
	}
	for _, p := range command.OutputDirectories {
		legacyKind[p] = wantDirectory
	}
	for _, r := range requests {
		if err := cs.addOutput(r.path, command.WorkingDirectory, r.kind, legacyKind[r.path]); err != nil {
			return nil, err
		}
	}
	if err := cs.hashFiles(ctx); err != nil {
		return nil, err
	}
	if err := cs.finish(ctx); err != nil {
		return nil, err
	}
	res := cs.result
	sort.Slice(res.OutputFiles, func(i, j int) bool { return res.OutputFiles[i].Path < res.OutputFiles[j].Path })
	sort.Slice(res.OutputDirectories, func(i, j int) bool { return res.OutputDirectories[i].Path < res.OutputDirectories[j].Path })
	sort.Slice(res.OutputSymlinks, func(i, j int) bool { return res.OutputSymlinks[i].Path < res.OutputSymlinks[j].Path })
	sort.Slice(res.OutputFileSymlinks, func(i, j int) bool { return res.OutputFileSymlinks[i].Path < res.OutputFileSymlinks[j].Path })
	sort.Slice(res.OutputDirectorySymlinks, func(i, j int) bool {
		return res.OutputDirectorySymlinks[i].Path < res.OutputDirectorySymlinks[j].Path
	})
	return res, nil
}

// capture is the state of one Capture call.
type capture struct {
	oc   *outputCapturer
	mv   *mergedView
	fn   digest.Function
	want map[string]bool
	// hashes lists the upper files to hash by host path; one file
	// can be reached as several outputs (a file output inside a
	// directory output), each with its own vnode.
	hashes map[string][]*vnode
	// names maps a host path to hash to the output path that first
	// reached it, for messages.
	names  map[string]string
	budget outputBudget
	files  []pendingOutputFile
	dirs   []pendingOutputDirectory
	result *remoteexecution.ActionResult
	// outputDirectoryFormat is what the Command asked for.
	outputDirectoryFormat remoteexecution.Command_OutputDirectoryFormat
}

type pendingOutputFile struct {
	path  string
	node  *vnode
	props *remoteexecution.NodeProperties
}

type pendingOutputDirectory struct {
	path string
	root *outDir
}

// outDir is an output directory before its files are hashed.
type outDir struct {
	node     *vnode
	props    *remoteexecution.NodeProperties
	files    []pendingOutputFile // path = name
	dirs     []outDirChild
	symlinks []*remoteexecution.SymlinkNode
}

type outDirChild struct {
	name string
	dir  *outDir
}

func (c *capture) symlinkAllowed(p, target string) error {
	if strings.HasPrefix(target, "/") && c.oc.options.SymlinkAbsolutePathStrategy == remoteexecution.SymlinkAbsolutePathStrategy_DISALLOWED {
		return status.Errorf(codes.InvalidArgument, "Output symlink %q has absolute target %q, which this worker does not allow", p, target)
	}
	return nil
}

func (c *capture) addOutput(p, workingDirectory string, kind, legacyKind outputKind) error {
	rel, err := outputPath(workingDirectory, p)
	if err != nil {
		return err
	}
	n, err := c.mv.lookup(rel)
	if err != nil {
		return err
	}
	if n == nil {
		return nil // a missing output is simply absent
	}
	if err := c.budget.addEntry(p); err != nil {
		return err
	}
	switch n.kind {
	case kindSymlink:
		if err := c.symlinkAllowed(p, n.target); err != nil {
			return err
		}
		props, err := nodeProperties(n, c.want)
		if err != nil {
			return err
		}
		s := &remoteexecution.OutputSymlink{Path: p, Target: n.target, NodeProperties: props}
		c.result.OutputSymlinks = append(c.result.OutputSymlinks, s)
		// Clients of REAPI 2.0 read the per-kind fields.
		switch {
		case legacyKind == wantFile:
			c.result.OutputFileSymlinks = append(c.result.OutputFileSymlinks, s)
		case legacyKind == wantDirectory:
			c.result.OutputDirectorySymlinks = append(c.result.OutputDirectorySymlinks, s)
		}
	case kindFile:
		if kind == wantDirectory {
			return status.Errorf(codes.FailedPrecondition, "Output directory %q is a regular file", p)
		}
		props, err := nodeProperties(n, c.want)
		if err != nil {
			return err
		}
		if err := c.noteFile(p, n); err != nil {
			return err
		}
		c.files = append(c.files, pendingOutputFile{path: p, node: n, props: props})
	case kindDirectory:
		if kind == wantFile {
			return status.Errorf(codes.FailedPrecondition, "Output file %q is a directory", p)
		}
		d, err := c.walkDirectory(p, n)
		if err != nil {
			return err
		}
		c.dirs = append(c.dirs, pendingOutputDirectory{path: p, root: d})
	}
	return nil
}

// noteFile queues a file the action wrote for hashing, once per
// inode path, within the budget.
func (c *capture) noteFile(p string, n *vnode) error {
	if !n.fromUpper {
		return nil
	}
	if _, seen := c.hashes[n.hostPath]; !seen {
		if err := c.budget.addBytes(p, n.size); err != nil {
			return err
		}
		c.names[n.hostPath] = p
	}
	c.hashes[n.hostPath] = append(c.hashes[n.hostPath], n)
	return nil
}

func (c *capture) walkDirectory(p string, n *vnode) (*outDir, error) {
	props, err := nodeProperties(n, c.want)
	if err != nil {
		return nil, err
	}
	d := &outDir{node: n, props: props}
	nodes, names, err := c.mv.children(n.dir)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		child := nodes[name]
		childPath := joinPath(p, name)
		if err := c.budget.addEntry(childPath); err != nil {
			return nil, err
		}
		switch child.kind {
		case kindFile:
			props, err := nodeProperties(child, c.want)
			if err != nil {
				return nil, err
			}
			if err := c.noteFile(childPath, child); err != nil {
				return nil, err
			}
			d.files = append(d.files, pendingOutputFile{path: name, node: child, props: props})
		case kindSymlink:
			if err := c.symlinkAllowed(childPath, child.target); err != nil {
				return nil, err
			}
			props, err := nodeProperties(child, c.want)
			if err != nil {
				return nil, err
			}
			d.symlinks = append(d.symlinks, &remoteexecution.SymlinkNode{Name: name, Target: child.target, NodeProperties: props})
		case kindDirectory:
			cd, err := c.walkDirectory(childPath, child)
			if err != nil {
				return nil, err
			}
			d.dirs = append(d.dirs, outDirChild{name: name, dir: cd})
		}
	}
	return d, nil
}

// hashFiles computes the digests of every output file the action wrote.
func (c *capture) hashFiles(ctx context.Context) error {
	paths := make([]string, 0, len(c.hashes))
	for p := range c.hashes {
		paths = append(paths, p)
	}
	return parallel.Run(ctx, c.oc.options.HashParallelism, len(paths), func(ctx context.Context, i int) error {
		d, err := hashFile(ctx, c.fn, paths[i])
		if err != nil {
			if code := status.Code(err); code == codes.Canceled || code == codes.ResourceExhausted {
				// Named by the output path, not the host's.
				return hashInterrupted(ctx, c.names[paths[i]], c.hashes[paths[i]][0].size)
			}
			return err
		}
		for _, n := range c.hashes[paths[i]] {
			n.digest = d
		}
		return nil
	})
}

// finish builds Tree messages, uploads what the CAS lacks and fills
// the result.
func (c *capture) finish(ctx context.Context) error {
	u := newUploader(c.oc.storage, c.oc.options.HashParallelism)
	for p, nodes := range c.hashes {
		u.addFile(nodes[0].digest, p)
	}
	for _, f := range c.files {
		c.result.OutputFiles = append(c.result.OutputFiles, &remoteexecution.OutputFile{
			Path:           f.path,
			Digest:         f.node.digest.GetProto(),
			IsExecutable:   f.node.executable,
			NodeProperties: f.props,
		})
	}
	for _, od := range c.dirs {
		tb := &treeBuilder{fn: c.fn, seen: map[digest.Digest]bool{}}
		rootDir, _, err := tb.directory(od.root)
		if err != nil {
			return err
		}
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&remoteexecution.Tree{Root: rootDir, Children: tb.children})
		if err != nil {
			return util.StatusWrapWithCode(err, codes.Internal, "Failed to marshal tree")
		}
		treeDigest := u.addBlob(c.fn, data)
		output := &remoteexecution.OutputDirectory{
			Path:       od.path,
			TreeDigest: treeDigest.GetProto(),
		}
		// REAPI 2.2+: a client may ask for the root Directory (with
		// every Directory below it stored on its own) instead of, or
		// besides, the Tree. The Tree is kept either way (the field
		// may be set for DIRECTORY_ONLY): Action Cache completeness
		// checks look at it.
		if f := c.outputDirectoryFormat; f == remoteexecution.Command_DIRECTORY_ONLY || f == remoteexecution.Command_TREE_AND_DIRECTORY {
			for _, directory := range append([]*remoteexecution.Directory{rootDir}, tb.children...) {
				encoded, err := proto.MarshalOptions{Deterministic: true}.Marshal(directory)
				if err != nil {
					return util.StatusWrapWithCode(err, codes.Internal, "Failed to marshal directory")
				}
				d := u.addBlob(c.fn, encoded)
				if directory == rootDir {
					output.RootDirectoryDigest = d.GetProto()
				}
			}
		}
		c.result.OutputDirectories = append(c.result.OutputDirectories, output)
	}
	return u.upload(ctx)
}

// treeBuilder turns an outDir into Directory messages, each distinct
// child listed once in the Tree.
type treeBuilder struct {
	fn       digest.Function
	seen     map[digest.Digest]bool
	children []*remoteexecution.Directory
}

func (tb *treeBuilder) directory(d *outDir) (*remoteexecution.Directory, digest.Digest, error) {
	dir := &remoteexecution.Directory{Symlinks: d.symlinks, NodeProperties: d.props}
	for _, f := range d.files {
		dir.Files = append(dir.Files, &remoteexecution.FileNode{
			Name:           f.path,
			Digest:         f.node.digest.GetProto(),
			IsExecutable:   f.node.executable,
			NodeProperties: f.props,
		})
	}
	for _, c := range d.dirs {
		child, childDigest, err := tb.directory(c.dir)
		if err != nil {
			return nil, digest.BadDigest, err
		}
		if !tb.seen[childDigest] {
			tb.seen[childDigest] = true
			tb.children = append(tb.children, child)
		}
		dir.Directories = append(dir.Directories, &remoteexecution.DirectoryNode{Name: c.name, Digest: childDigest.GetProto()})
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(dir)
	if err != nil {
		return nil, digest.BadDigest, util.StatusWrapWithCode(err, codes.Internal, "Failed to marshal directory")
	}
	g := tb.fn.NewGenerator(int64(len(data)))
	g.Write(data)
	return dir, g.Sum(), nil
}

func statNodeProperties(st *unix.Stat_t, want map[string]bool) *remoteexecution.NodeProperties {
	np := &remoteexecution.NodeProperties{}
	if want["unix_mode"] {
		np.UnixMode = wrapperspb.UInt32(st.Mode & 0o7777)
	}
	if want["mtime"] {
		np.Mtime = timestamppb.New(time.Unix(st.Mtim.Sec, st.Mtim.Nsec))
	}
	return np
}

func (c *outputCapturer) UploadBlob(ctx context.Context, instanceName digest.InstanceName, digestFunction digest.Function, data []byte) (digest.Digest, error) {
	u := newUploader(c.storage, 1)
	d := u.addBlob(digestFunction, data)
	if err := u.upload(ctx); err != nil {
		return digest.BadDigest, err
	}
	return d, nil
}

func (c *outputCapturer) UploadFile(ctx context.Context, instanceName digest.InstanceName, digestFunction digest.Function, p string) (digest.Digest, error) {
	d, err := hashFile(ctx, digestFunction, p)
	if err != nil {
		return digest.BadDigest, err
	}
	u := newUploader(c.storage, 1)
	u.addFile(d, p)
	if err := u.upload(ctx); err != nil {
		return digest.BadDigest, err
	}
	return d, nil
}
