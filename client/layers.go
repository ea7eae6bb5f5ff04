package client

import (
	"fmt"
	"strings"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layerproperty"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

// WithLayers returns root with the directory at path (created if
// absent) declared as the union of its own entries on top of layers,
// topmost first, through the bitzel.layers node property. Ancestors are
// rewritten; the layers' trees must already be built with b.
func (b *TreeBuilder) WithLayers(root digest.Digest, path string, layers []digest.Digest) (digest.Digest, error) {
	components, err := splitRelative(path)
	if err != nil {
		return digest.BadDigest, err
	}
	return b.edit(root, components, func(directory *remoteexecution.Directory) error {
		var kept []*remoteexecution.NodeProperty
		for _, p := range directory.GetNodeProperties().GetProperties() {
			if p.Name != layerproperty.Name {
				kept = append(kept, p)
			}
		}
		properties := directory.GetNodeProperties()
		if properties == nil {
			properties = &remoteexecution.NodeProperties{}
		}
		properties.Properties = append(kept, &remoteexecution.NodeProperty{Name: layerproperty.Name, Value: layerproperty.Format(layers)})
		directory.NodeProperties = properties
		return nil
	})
}

// Place returns root with tree at path, replacing what was there.
func (b *TreeBuilder) Place(root digest.Digest, path string, tree digest.Digest) (digest.Digest, error) {
	components, err := splitRelative(path)
	if err != nil {
		return digest.BadDigest, err
	}
	if len(components) == 0 {
		return tree, nil
	}
	last := components[len(components)-1]
	return b.edit(root, components[:len(components)-1], func(directory *remoteexecution.Directory) error {
		return setChild(directory, last, tree)
	})
}

func splitRelative(path string) ([]string, error) {
	var components []string
	for _, c := range strings.Split(path, "/") {
		switch c {
		case "", ".":
		case "..":
			return nil, fmt.Errorf("path %q leaves the input root", path)
		default:
			components = append(components, c)
		}
	}
	return components, nil
}

// edit applies change to the directory at components below d, creating
// missing directories, and rewrites every ancestor.
func (b *TreeBuilder) edit(d digest.Digest, components []string, change func(*remoteexecution.Directory) error) (digest.Digest, error) {
	directory, err := b.Directory(d)
	if err != nil {
		return digest.BadDigest, err
	}
	if len(components) == 0 {
		if err := change(directory); err != nil {
			return digest.BadDigest, err
		}
		return b.AddMessage(directory)
	}
	name := components[0]
	child, err := b.AddMessage(&remoteexecution.Directory{})
	if err != nil {
		return digest.BadDigest, err
	}
	for _, node := range directory.Directories {
		if node.Name == name {
			if child, err = b.function.NewDigestFromProto(node.Digest); err != nil {
				return digest.BadDigest, err
			}
		}
	}
	edited, err := b.edit(child, components[1:], change)
	if err != nil {
		return digest.BadDigest, err
	}
	if err := setChild(directory, name, edited); err != nil {
		return digest.BadDigest, err
	}
	return b.AddMessage(directory)
}

// setChild makes name a directory node pointing at d, keeping the
// entries sorted as the REAPI requires.
func setChild(directory *remoteexecution.Directory, name string, d digest.Digest) error {
	for _, f := range directory.Files {
		if f.Name == name {
			return fmt.Errorf("%q is a file, not a directory", name)
		}
	}
	for _, s := range directory.Symlinks {
		if s.Name == name {
			return fmt.Errorf("%q is a symlink, not a directory", name)
		}
	}
	node := &remoteexecution.DirectoryNode{Name: name, Digest: d.GetProto()}
	at := len(directory.Directories)
	for i, c := range directory.Directories {
		if c.Name == name {
			directory.Directories[i] = node
			return nil
		}
		if c.Name > name {
			at = i
			break
		}
	}
	directory.Directories = append(directory.Directories[:at], append([]*remoteexecution.DirectoryNode{node}, directory.Directories[at:]...)...)
	return nil
}
