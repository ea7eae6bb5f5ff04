package layers

import (
	"time"

	"github.com/buildbarn/bb-storage/pkg/digest"
)

// LayerUse is one layer of a materialised input root as an operator
// looks at it: where it is, how large, and whether this action found it
// cached or had to build it (the usual reason one action's input fetch
// took far longer than another's).
type LayerUse struct {
	// Path is the mount the layer is a lowerdir of, relative to the
	// input root ("." for the root itself).
	Path string
	// Digest is the layer's key: the Directory it materialises (a
	// rewritten one when mounts lie below it).
	Digest digest.Digest
	// Files counts regular files and symlinks, Bytes their contents,
	// as often as they appear (identical subtrees included).
	Files int64
	Bytes int64
	// Built is true when this action built the layer, false when it
	// was in the layer cache (or another action built it meanwhile).
	Built bool
	// Time is how long obtaining the layer took this action: building
	// it, or waiting for another action's build; 0 for a cache hit.
	Time time.Duration
}

// layerSize is a layer's Files and Bytes.
type layerSize struct {
	files, bytes int64
}

// planSizes are the sizes of every layer of a plan, aligned with
// plan.mounts[i].layers[j]. They are counted once per plan and kept
// with it, so that placing a known input root stays O(mounts).
type planSizes [][]layerSize

func countPlanSizes(p *plan) planSizes {
	memo := map[*dirInfo]layerSize{}
	sizes := make(planSizes, len(p.mounts))
	for i, pm := range p.mounts {
		sizes[i] = make([]layerSize, len(pm.layers))
		for j, l := range pm.layers {
			sizes[i][j] = countLayer(p.t, l.root, memo)
		}
	}
	return sizes
}

// countLayer counts the tree below root; child mounts are not in it
// (the planner left empty directories there).
func countLayer(t tree, root *dirInfo, memo map[*dirInfo]layerSize) layerSize {
	if root == nil {
		return layerSize{}
	}
	if s, ok := memo[root]; ok {
		return s
	}
	s := layerSize{files: int64(len(root.dir.Files) + len(root.dir.Symlinks))}
	for _, f := range root.dir.Files {
		s.bytes += f.Digest.GetSizeBytes()
	}
	for _, c := range root.dirDigests {
		cs := countLayer(t, t[c], memo)
		s.files, s.bytes = s.files+cs.files, s.bytes+cs.bytes
	}
	memo[root] = s
	return s
}

// layerUses describes every layer of r as found in the cache; build
// then marks those it built.
func layerUses(p *plan, sizes planSizes) [][]LayerUse {
	uses := make([][]LayerUse, len(p.mounts))
	for i, pm := range p.mounts {
		uses[i] = make([]LayerUse, len(pm.layers))
		for j, l := range pm.layers {
			uses[i][j] = LayerUse{Path: displayPath(pm.path), Digest: l.key, Files: sizes[i][j].files, Bytes: sizes[i][j].bytes}
		}
	}
	return uses
}

// flatten lists the layers mount by mount, topmost first.
func flattenLayerUses(uses [][]LayerUse) []LayerUse {
	var all []LayerUse
	for _, m := range uses {
		all = append(all, m...)
	}
	return all
}
