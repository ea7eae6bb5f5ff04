package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

// Input roots of growing size and layer count, cold (nothing of them
// on the worker) and warm (the same root again, in a new action).
//
// Each action is /bin/true with the tree as an output directory, as a
// BitBake do_populate_sysroot passes its input through: the worker's
// setup (input fetch + sandbox start + the command) and its output
// upload are read from ExecutedActionMetadata; the client's upload of
// the inputs and the end-to-end Execute latency are timed here.
//
// Baselines, on the same files written to local disk: cp -a (a worker
// without caches writes every file) for cold setup, cp -al (a
// hardlinking worker such as Buildbarn's native build directory) for
// warm setup, each followed by fork/exec of /bin/true; sha256sum of
// every file for the uploads (the least that learning their digests
// costs).

const fileSize = 1024

// treeShape is the input root of one scaling point.
type treeShape struct {
	axis   string // "files" or "layers"
	files  int
	layers int // for axis "layers": the union's layer count
	// out is the tree's path in the input root: the output directory.
	out string
}

// build adds a fresh instance of the shape (contents drawn from seed)
// and returns the input root; when disk is set the same files are
// written below disk/out.
func (h *harness) buildShape(b blobs, s treeShape, seed int64, disk string) (digest.Digest, error) {
	diskAt := func(parts ...string) string {
		if disk == "" {
			return ""
		}
		return filepath.Join(append([]string{disk, s.out}, parts...)...)
	}
	if s.axis == "files" {
		tree, err := h.ep.build(b, treeSpec{files: s.files, perDir: 100, size: fileSize}, seed, diskAt())
		if err != nil {
			return digest.BadDigest, err
		}
		return h.ep.root(b, map[string]digest.Digest{s.out: tree}), nil
	}
	// Each layer holds its share of the files under usr/lib/lNNN, so
	// the union's merged view (what cp copies) has every file once.
	layers := make([]digest.Digest, s.layers)
	for l := range layers {
		name := fmt.Sprintf("l%03d", l)
		n := s.files / s.layers
		tree, err := h.ep.build(b, treeSpec{files: n, perDir: 100, size: fileSize}, seed*1000+int64(l), diskAt("usr", "lib", name))
		if err != nil {
			return digest.BadDigest, err
		}
		layers[l] = h.ep.wrap(b, tree, []string{"usr", "lib", name})
	}
	return h.ep.root(b, map[string]digest.Digest{s.out: h.ep.union(b, layers)}), nil
}

type treeRun struct {
	e2e     time.Duration
	stages  stages
	upload  time.Duration // client upload of the inputs (cold only)
	missing int64         // bytes uploaded
}

// runTree uploads what the endpoint lacks of the tree, then executes a
// new action over it.
func (h *harness) runTree(b blobs, root digest.Digest, out string, withOutput bool) (treeRun, error) {
	ctx := context.Background()
	var r treeRun
	settle()
	start := time.Now()
	if err := h.ep.upload(ctx, b); err != nil {
		return r, err
	}
	r.upload = time.Since(start)
	r.missing = b.bytes()
	cb := blobs{}
	c := command{args: []string{"/bin/true"}, input: root}
	if withOutput {
		c.outputs = []string{out}
	}
	action := h.ep.action(cb, c, h.next())
	if err := h.ep.upload(ctx, cb); err != nil {
		return r, err
	}
	settle()
	start = time.Now()
	result, err := h.ep.execute(ctx, action)
	if err != nil {
		return r, err
	}
	r.e2e = time.Since(start)
	r.stages = stagesOf(result.ExecutionMetadata)
	return r, nil
}

// treePoint measures one shape: cold reps, then warm reps on the last
// cold tree, each interleaved with its baseline.
// headline adds the end-to-end figures of the "input" section.
func (h *harness) treePoint(s treeShape, coldReps, warmReps int, headline bool) error {
	x := fmt.Sprint(s.files)
	if s.axis == "layers" {
		x = fmt.Sprint(s.layers)
	}
	scratch, err := os.MkdirTemp(h.work, "tree-")
	if err != nil {
		return err
	}
	defer fsutil.RemoveAll(scratch)
	fmt.Fprintf(os.Stderr, "  %s=%s: generating\n", s.axis, x)
	// The baseline's copy of the tree (the content differs from the
	// worker's fresh trees; copying costs the same).
	if _, err := h.buildShape(blobs{}, s, h.seed(), scratch); err != nil {
		return err
	}
	src := filepath.Join(scratch, s.out)
	true1 := func() time.Duration { d, _, _ := forkExecTrue(); return d }

	var cold, warm []treeRun
	var cpA, cpAL, sha []time.Duration
	var root digest.Digest
	for i := 0; i < coldReps; i++ {
		b := blobs{}
		if root, err = h.buildShape(b, s, h.seed(), ""); err != nil {
			return err
		}
		r, err := h.runTree(b, root, s.out, h.passThrough)
		if err != nil {
			return err
		}
		cold = append(cold, r)
		d, err := cpTree("-a", src, scratch)
		if err != nil {
			return err
		}
		cpA = append(cpA, d+true1())
		d, err = sha256Tree(src)
		if err != nil {
			return err
		}
		sha = append(sha, d)
	}
	for i := 0; i < warmReps; i++ {
		r, err := h.runTree(blobs{}, root, s.out, h.passThrough)
		if err != nil {
			return err
		}
		warm = append(warm, r)
		d, err := cpTree("-al", src, scratch)
		if err != nil {
			return err
		}
		cpAL = append(cpAL, d+true1())
	}
	med := func(runs []treeRun, f func(treeRun) time.Duration) float64 {
		var ds []time.Duration
		for _, r := range runs {
			ds = append(ds, f(r))
		}
		return ms(median(ds))
	}
	section := "scaling"
	add := func(workload, metric string, ours float64, baseline string, base []time.Duration, note string) {
		h.add(row{section: section, workload: workload, x: x, metric: metric, unit: "ms", ours: ours, baseline: baseline, base: ms(median(base)), note: note})
	}
	if headline {
		section = "input"
		add("cold", "Execute latency", med(cold, func(r treeRun) time.Duration { return r.e2e }), "cp -a + fork/exec", cpA, "")
		add("cold", "setup", med(cold, func(r treeRun) time.Duration { return r.stages.setup() }), "cp -a + fork/exec", cpA, "fetch+sandbox+run")
		add("warm", "Execute latency", med(warm, func(r treeRun) time.Duration { return r.e2e }), "cp -al + fork/exec", cpAL, "")
		add("warm", "setup", med(warm, func(r treeRun) time.Duration { return r.stages.setup() }), "cp -al + fork/exec", cpAL, "fetch+sandbox+run")
		section = "scaling"
	}
	add(s.axis, "setup cold", med(cold, func(r treeRun) time.Duration { return r.stages.setup() }), "cp -a + fork/exec", cpA, "fetch+sandbox+run")
	add(s.axis, "setup warm", med(warm, func(r treeRun) time.Duration { return r.stages.setup() }), "cp -al + fork/exec", cpAL, "fetch+sandbox+run")
	if h.passThrough {
		add(s.axis, "output upload", med(warm, func(r treeRun) time.Duration { return r.stages.upload }), "sha256sum", sha, "tree passed through")
	}
	add(s.axis, "input upload", med(cold, func(r treeRun) time.Duration { return r.upload }), "sha256sum", sha, "client: hash, FindMissing, Batch")
	return nil
}

// scaling measures each input size and layer count; the size equal to
// headline (the 10,000-file input root) also gets the end-to-end rows.
func (h *harness) scaling(files, layers []int, headline int) error {
	for _, n := range files {
		reps := 3
		if n > 10000 {
			reps = 1
		}
		if err := h.treePoint(treeShape{axis: "files", files: n, out: "in"}, reps, 5, n == headline); err != nil {
			return err
		}
	}
	for _, l := range layers {
		if err := h.treePoint(treeShape{axis: "layers", files: 10000, layers: l, out: "sysroot"}, 3, 5, false); err != nil {
			return err
		}
	}
	return nil
}
