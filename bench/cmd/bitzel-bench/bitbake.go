package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

// A BitBake-like task: a recipe's do_compile reads its
// recipe-sysroot, the union of 20 dependencies' sysroot-destdir trees
// (250 headers and 250 libraries each, 10,000 files of 1 KiB), and its
// source, and writes an image directory.
//
// Remote: recipe-sysroot is a bitzel.layers union, so each dependency
// is one cached layer. Cold: every dependency and the source are new to
// the worker. Warm: the same dependencies, new source (the next recipe
// with the same dependencies, or an edit).
//
// Local baseline, what BitBake itself does: stage the sysroot by
// hardlinking every dependency's files into recipe-sysroot (cp -al),
// then run the task; and the same task inside bubblewrap.

const bitbakeDeps = 20

const compileScript = `set -e
mkdir -p image
cat recipe-sysroot/usr/include/*/*/* | sha256sum > image/headers.sum
ls -R recipe-sysroot/usr/lib | wc -l > image/libs.count
cat src/*/* > image/prog.o
cp -r src image/src
`

func (h *harness) bitbake(coldReps, warmReps int) error {
	scratch, err := os.MkdirTemp(h.work, "bitbake-")
	if err != nil {
		return err
	}
	defer fsutil.RemoveAll(scratch)
	// The local copy: deps/depNN/usr/... and src/.
	deps := filepath.Join(scratch, "deps")
	if _, err := h.bitbakeDeps(blobs{}, h.seed(), deps); err != nil {
		return err
	}
	if _, err := h.bitbakeSrc(blobs{}, h.seed(), filepath.Join(scratch, "src")); err != nil {
		return err
	}
	var cold, warm, base, baseBwrap []time.Duration
	var coldStages, warmStages []stages
	var depTrees []digest.Digest
	for i := 0; i < coldReps+warmReps; i++ {
		b := blobs{}
		if i < coldReps {
			if depTrees, err = h.bitbakeDeps(b, h.seed(), ""); err != nil {
				return err
			}
		}
		src, err := h.bitbakeSrc(b, h.seed(), "")
		if err != nil {
			return err
		}
		root := h.ep.root(b, map[string]digest.Digest{"recipe-sysroot": h.ep.union(b, depTrees), "src": src})
		d, st, err := h.bitbakeRemote(b, root)
		if err != nil {
			return err
		}
		if i < coldReps {
			cold, coldStages = append(cold, d), append(coldStages, st)
		} else {
			warm, warmStages = append(warm, d), append(warmStages, st)
		}
		if d, err = bitbakeLocal(scratch, deps, false); err != nil {
			return err
		}
		base = append(base, d)
		if h.bwrap {
			if d, err = bitbakeLocal(scratch, deps, true); err != nil {
				return err
			}
			baseBwrap = append(baseBwrap, d)
		}
	}
	setup := func(ss []stages) float64 {
		var ds []time.Duration
		for _, s := range ss {
			ds = append(ds, s.fetch)
		}
		return ms(median(ds))
	}
	x := fmt.Sprintf("%d layers", bitbakeDeps)
	h.add(row{section: "bitbake", workload: "cold", x: x, metric: "Execute latency", unit: "ms", ours: ms(median(cold)), baseline: "local: cp -al staging + task", base: ms(median(base))})
	h.add(row{section: "bitbake", workload: "warm", x: x, metric: "Execute latency", unit: "ms", ours: ms(median(warm)), baseline: "local: cp -al staging + task", base: ms(median(base))})
	if h.bwrap {
		h.add(row{section: "bitbake", workload: "warm", x: x, metric: "Execute latency", unit: "ms", ours: ms(median(warm)), baseline: "local in bwrap", base: ms(median(baseBwrap))})
	}
	fmt.Fprintf(os.Stderr, "  input fetch: cold %.1f ms, warm %.1f ms\n", setup(coldStages), setup(warmStages))
	return nil
}

// bitbakeDeps returns the dependencies' trees, written to disk too
// when disk is set.
func (h *harness) bitbakeDeps(b blobs, seed int64, disk string) ([]digest.Digest, error) {
	deps := make([]digest.Digest, bitbakeDeps)
	for i := range deps {
		name := fmt.Sprintf("dep%02d", i)
		parts := map[string]digest.Digest{}
		for j, sub := range []string{"include", "lib"} {
			at := ""
			if disk != "" {
				at = filepath.Join(disk, name, "usr", sub, name)
			}
			tree, err := h.ep.build(b, treeSpec{files: 250, perDir: 125, size: fileSize}, seed*100+int64(2*i+j), at)
			if err != nil {
				return nil, err
			}
			parts[sub] = h.ep.wrap(b, tree, []string{name})
		}
		deps[i] = h.ep.wrap(b, h.ep.root(b, parts), []string{"usr"})
	}
	return deps, nil
}

func (h *harness) bitbakeSrc(b blobs, seed int64, disk string) (digest.Digest, error) {
	return h.ep.build(b, treeSpec{files: 100, perDir: 50, size: 4096}, seed, disk)
}

// bitbakeLocal is the baseline: the sysroot staged with cp -al from
// the local copy in scratch, then the task, in bwrap or not.
func bitbakeLocal(scratch, deps string, bwrap bool) (time.Duration, error) {
	work := filepath.Join(scratch, "work")
	fsutil.RemoveAll(work)
	if err := os.MkdirAll(filepath.Join(work, "recipe-sysroot"), 0o755); err != nil {
		return 0, err
	}
	defer fsutil.RemoveAll(work)
	script := fmt.Sprintf(`set -e
cd %q
for d in %q/*; do cp -al "$d"/. recipe-sysroot/; done
cp -a %q src
`, work, deps, filepath.Join(scratch, "src"))
	settle()
	staging, _, err := timed("sh", "-c", script)
	if err != nil {
		return 0, err
	}
	argv := []string{"sh", "-c", "cd " + work + "\n" + compileScript}
	if bwrap {
		argv = bwrapArgs("--bind", scratch, scratch, "sh", "-c", "cd "+work+"\n"+compileScript)
	}
	settle()
	task, _, err := timed(argv...)
	if err != nil {
		return 0, err
	}
	return staging + task, nil
}

// bitbakeRemote uploads b and runs the task on the input root root.
func (h *harness) bitbakeRemote(b blobs, root digest.Digest) (time.Duration, stages, error) {
	ctx := context.Background()
	if err := h.ep.upload(ctx, b); err != nil {
		return 0, stages{}, err
	}
	cb := blobs{}
	action := h.ep.action(cb, command{args: []string{"/bin/sh", "-c", compileScript}, input: root, outputs: []string{"image"}}, h.next())
	if err := h.ep.upload(ctx, cb); err != nil {
		return 0, stages{}, err
	}
	settle()
	start := time.Now()
	result, err := h.ep.execute(ctx, action)
	if err != nil {
		return 0, stages{}, err
	}
	return time.Since(start), stagesOf(result.ExecutionMetadata), nil
}

// outputs: the action writes 1000 files of 1 MiB (distinct contents);
// the worker hashes and stores them. Baselines: sha256sum of the same
// files (hashing alone) and cp -a of them (writing them once more).
func (h *harness) outputs(reps int) error {
	scratch, err := os.MkdirTemp(h.work, "outputs-")
	if err != nil {
		return err
	}
	defer fsutil.RemoveAll(scratch)
	seed := make([]byte, 1<<20)
	rand.Read(seed)
	b := blobs{}
	in := h.ep.root(b, map[string]digest.Digest{"in": h.ep.dirWithFile(b, "seed", b.add(h.ep.function, seed))})
	if err := os.MkdirAll(filepath.Join(scratch, "in"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(scratch, "in", "seed"), seed, 0o644); err != nil {
		return err
	}
	const script = `set -e
mkdir -p out
i=0
while [ $i -lt 1000 ]; do { echo "$BENCH_NONCE $i"; cat in/seed; } > out/o$i; i=$((i+1)); done
`
	ctx := context.Background()
	if err := h.ep.upload(ctx, b); err != nil {
		return err
	}
	var ours, sha, cp []time.Duration
	var bytes int64
	for i := 0; i < reps; i++ {
		cb := blobs{}
		action := h.ep.action(cb, command{args: []string{"/bin/sh", "-c", script}, input: in, outputs: []string{"out"}, timeout: 10 * time.Minute}, h.next())
		if err := h.ep.upload(ctx, cb); err != nil {
			return err
		}
		settle()
		result, err := h.ep.execute(ctx, action)
		if err != nil {
			return err
		}
		ours = append(ours, stagesOf(result.ExecutionMetadata).upload)
		// The same files, written by the same script on the host.
		work := filepath.Join(scratch, "host")
		fsutil.RemoveAll(work)
		os.MkdirAll(work, 0o755)
		os.Symlink(filepath.Join(scratch, "in"), filepath.Join(work, "in"))
		settle()
		if _, _, err := timed("sh", "-c", "cd "+work+"\nBENCH_NONCE=host"+fmt.Sprint(i)+"\n"+script); err != nil {
			return err
		}
		d, err := sha256Tree(filepath.Join(work, "out"))
		if err != nil {
			return err
		}
		sha = append(sha, d)
		if d, err = cpTree("-a", filepath.Join(work, "out"), scratch); err != nil {
			return err
		}
		cp = append(cp, d)
		bytes = 0
		entries, _ := os.ReadDir(filepath.Join(work, "out"))
		for _, e := range entries {
			if info, err := e.Info(); err == nil {
				bytes += info.Size()
			}
		}
		fsutil.RemoveAll(work)
	}
	x := fmt.Sprintf("%.2f GB", float64(bytes)/1e9)
	h.add(row{section: "outputs", workload: "output upload", x: x, metric: "hash + store", unit: "ms", ours: ms(median(ours)), baseline: "sha256sum", base: ms(median(sha))})
	h.add(row{section: "outputs", workload: "output upload", x: x, metric: "hash + store", unit: "ms", ours: ms(median(ours)), baseline: "cp -a", base: ms(median(cp))})
	mbs := func(d time.Duration) float64 { return float64(bytes) / 1e6 / d.Seconds() }
	h.add(row{section: "outputs", workload: "output upload", x: x, metric: "rate", unit: "MB/s", ours: mbs(median(ours)), baseline: "sha256sum", base: mbs(median(sha))})
	return nil
}
