package layers

import (
	"sync"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

// InputRoot is a materialised input root: overlay mounts whose
// lowerdirs are leased layers. Outputs are computed against it after
// the action, so it stays valid (and its layers leased) until Release.
type InputRoot struct {
	// Mounts[0] is the exec root (Path ""); parents come before
	// their children.
	Mounts []Mount
	// Root is the input root digest; its digest function is the
	// action's.
	Root digest.Digest
	// Layers are every mount's layers, mount by mount and topmost
	// first, with whether this materialisation found or built them.
	Layers []LayerUse

	plan        *plan
	leases      []LayerLease
	releaseOnce sync.Once
}

// Mount is one overlay of the exec root.
type Mount struct {
	// Path is relative to the exec root, "" for the root itself.
	Path string
	// Layers are absolute lowerdir paths, topmost first, never empty.
	Layers []string
}

func newInputRoot(root digest.Digest, p *plan) *InputRoot {
	r := &InputRoot{Root: root, plan: p, Mounts: make([]Mount, len(p.mounts))}
	for i, pm := range p.mounts {
		r.Mounts[i] = Mount{Path: pm.path, Layers: make([]string, len(pm.layers))}
	}
	return r
}

// Release drops the leases on the layers; they may be evicted from now
// on. It is idempotent.
func (r *InputRoot) Release() {
	r.releaseOnce.Do(func() {
		for _, l := range r.leases {
			l.Release()
		}
	})
}

// Directory is a checked Directory message of a materialised input
// root, with the way to its children: what the layers of a mount hold,
// for reading the merged view of the exec root without reading the
// layers back from disk.
type Directory struct {
	info *dirInfo
	t    tree
}

// Message is the Directory message. It must not be modified.
func (d Directory) Message() *remoteexecution.Directory { return d.info.dir }

// FileDigest is the digest of Message().Files[i], in the digest
// function of the input root.
func (d Directory) FileDigest(i int) digest.Digest { return d.info.fileDigests[i] }

// Child is the Directory of Message().Directories[i].
func (d Directory) Child(i int) Directory {
	return Directory{info: d.t[d.info.dirDigests[i]], t: d.t}
}

// LayerDirectories are the root Directories of the layers of
// Mounts[mount], aligned with Mounts[mount].Layers: element j is what
// the layer at Layers[j] holds. Layers a caller appended to Layers
// (a container image's, say) have none, and an InputRoot not made by
// a Materializer has no Directories at all.
func (r *InputRoot) LayerDirectories(mount int) []Directory {
	if r.plan == nil || mount >= len(r.plan.mounts) {
		return nil
	}
	pm := r.plan.mounts[mount]
	dirs := make([]Directory, len(pm.layers))
	for j, l := range pm.layers {
		dirs[j] = Directory{info: l.root, t: r.plan.t}
	}
	return dirs
}
