// Package client is the REAPI client side of remote mode: it turns
// local directories into input trees, runs an action on any REAPI
// endpoint and brings its outputs back. `bitzel-worker submit` is a
// command-line front end to it; bitzel can use it as a library.
package client

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Tree is a Merkle tree built from local files: every Directory message
// and where each file's content can be read.
type Tree struct {
	Root digest.Digest
	// Directories maps each Directory digest to its encoded message.
	Directories map[digest.Digest][]byte
	// Files maps each file digest to one local path holding it.
	Files map[digest.Digest]string
}

// TreeBuilder builds Trees with one digest function, sharing blobs
// across every tree it builds (a task's WORKDIR and its layers).
type TreeBuilder struct {
	// PreserveMtimes sends each file's modification time as its mtime
	// node property. The worker then gives the input that time, which
	// make needs in a task that continues an earlier task's build tree;
	// without it every input has one fixed time. Off by default: the
	// times become part of the digests, so identical trees checked
	// out at different times would no longer share cache entries.
	PreserveMtimes bool
	// PreserveModes sends each file's permission bits as its
	// unix_mode node property, so that a task that copies its inputs
	// (a BitBake do_populate_sysroot) returns the modes a local build
	// would.
	PreserveModes bool
	function      digest.Function
	directories   map[digest.Digest][]byte
	files         map[digest.Digest]string
}

// NewTreeBuilder creates a TreeBuilder.
func NewTreeBuilder(function digest.Function) *TreeBuilder {
	return &TreeBuilder{function: function, directories: map[digest.Digest][]byte{}, files: map[digest.Digest]string{}}
}

// Blobs returns every blob the builder produced so far.
func (b *TreeBuilder) Blobs() (directories map[digest.Digest][]byte, files map[digest.Digest]string) {
	return b.directories, b.files
}

// AddDirectory hashes the tree under path. Entries are as the REAPI
// wants them: sorted by name, symlinks kept as symlinks, the executable
// bit from the owner's x bit. Other file types (sockets, devices) are
// an error naming them.
func (b *TreeBuilder) AddDirectory(path string) (digest.Digest, error) {
	directory, err := b.directory(path)
	if err != nil {
		return digest.BadDigest, err
	}
	return b.AddMessage(directory)
}

// AddMessage stores an already built Directory.
func (b *TreeBuilder) AddMessage(directory *remoteexecution.Directory) (digest.Digest, error) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(directory)
	if err != nil {
		return digest.BadDigest, err
	}
	d := b.digestOf(data)
	b.directories[d] = data
	return d, nil
}

// Directory returns the message of a digest AddDirectory returned.
func (b *TreeBuilder) Directory(d digest.Digest) (*remoteexecution.Directory, error) {
	data, ok := b.directories[d]
	if !ok {
		return nil, fmt.Errorf("directory %s was not built here", d)
	}
	directory := &remoteexecution.Directory{}
	return directory, proto.Unmarshal(data, directory)
}

func (b *TreeBuilder) digestOf(data []byte) digest.Digest {
	generator := b.function.NewGenerator(int64(len(data)))
	generator.Write(data)
	return generator.Sum()
}

func (b *TreeBuilder) directory(path string) (*remoteexecution.Directory, error) {
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	directory := &remoteexecution.Directory{}
	if b.PreserveModes {
		info, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		directory.NodeProperties = &remoteexecution.NodeProperties{UnixMode: wrapperspb.UInt32(uint32(info.Mode().Perm()))}
	}
	for _, entry := range entries {
		child := filepath.Join(path, entry.Name())
		info, err := os.Lstat(child)
		if err != nil {
			return nil, err
		}
		switch mode := info.Mode(); {
		case mode.IsDir():
			d, err := b.AddDirectory(child)
			if err != nil {
				return nil, err
			}
			directory.Directories = append(directory.Directories, &remoteexecution.DirectoryNode{Name: entry.Name(), Digest: d.GetProto()})
		case mode&os.ModeSymlink != 0:
			target, err := os.Readlink(child)
			if err != nil {
				return nil, err
			}
			directory.Symlinks = append(directory.Symlinks, &remoteexecution.SymlinkNode{Name: entry.Name(), Target: target})
		case mode.IsRegular():
			d, err := b.hashFile(child, info.Size())
			if err != nil {
				return nil, err
			}
			b.files[d] = child
			node := &remoteexecution.FileNode{
				Name:         entry.Name(),
				Digest:       d.GetProto(),
				IsExecutable: mode&0o100 != 0,
			}
			if b.PreserveMtimes || b.PreserveModes {
				node.NodeProperties = &remoteexecution.NodeProperties{}
				if b.PreserveMtimes {
					node.NodeProperties.Mtime = timestamppb.New(info.ModTime())
				}
				if b.PreserveModes {
					node.NodeProperties.UnixMode = wrapperspb.UInt32(uint32(mode.Perm()))
				}
			}
			directory.Files = append(directory.Files, node)
		default:
			return nil, fmt.Errorf("%s: a %v cannot be an input", child, mode.Type())
		}
	}
	return directory, nil
}

func (b *TreeBuilder) hashFile(path string, size int64) (digest.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return digest.BadDigest, err
	}
	defer f.Close()
	generator := b.function.NewGenerator(size)
	if _, err := io.Copy(generator, f); err != nil {
		return digest.BadDigest, fmt.Errorf("%s: %w", path, err)
	}
	return generator.Sum(), nil
}
