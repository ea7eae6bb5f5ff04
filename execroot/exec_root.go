package execroot

import (
	"os"
	"path"
	"sync"

	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/outputs"
	"github.com/bitzel/bitzel-worker/sandbox"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
)

// ExecRoot is one action's exec root, from its preparation until
// Release.
type ExecRoot struct {
	pool   *Pool
	dir    *directory
	inputs *layers.InputRoot
	// below are leases on layers under the input root's (a container
	// image's), released with it.
	below  []layers.LayerLease
	mounts []sandbox.Mount
	// uppers are where the action's writes are: the pool's directories
	// before Ran, the disk budget's tmpfs after it when there was one.
	uppers []string
	// After Ran: the sandbox's disk budget (nil: none), and when its
	// PID 1 is gone (nil: at once). ran says the directory is in a
	// known state and may be reused.
	diskBudget *os.File
	released   <-chan struct{}
	ran        bool

	releaseOnce sync.Once
}

// Prepare makes the exec root of an action over its materialised input
// root: a directory of the pool with an upper and a work directory per
// mount. below (a container image's root file system, topmost first)
// go under the input root's own layers on the root mount. The exec root
// owns inputs and the leases below from now on: Release releases them,
// and so does a failed Prepare.
func (p *Pool) Prepare(inputs *layers.InputRoot, below []layers.LayerLease) (*ExecRoot, error) {
	dir, err := p.get(len(inputs.Mounts))
	if err != nil {
		inputs.Release()
		releaseAll(below)
		return nil, storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to create the action directory")
	}
	r := &ExecRoot{pool: p, dir: dir, inputs: inputs, below: below, mounts: make([]sandbox.Mount, len(inputs.Mounts)), uppers: make([]string, len(inputs.Mounts))}
	for i, m := range inputs.Mounts {
		lowers := m.Layers
		if i == 0 && len(below) > 0 {
			// A copy: the materialiser owns its slice.
			lowers = append([]string{}, m.Layers...)
			for _, l := range below {
				lowers = append(lowers, l.Path())
			}
		}
		r.uppers[i] = dir.upper(i)
		r.mounts[i] = sandbox.Mount{Path: m.Path, Layers: lowers, UpperDir: r.uppers[i], WorkDir: dir.work(i)}
	}
	return r, nil
}

// Mounts are the overlays of the exec root, parents before children,
// as the sandbox mounts them.
func (r *ExecRoot) Mounts() []sandbox.Mount { return r.mounts }

// Inputs is the materialised input root the exec root is stacked on.
func (r *ExecRoot) Inputs() *layers.InputRoot { return r.inputs }

// UpperDirs are the upper directories of Mounts, one per mount, where
// the action's writes are: after Ran, wherever the sandbox left them.
func (r *ExecRoot) UpperDirs() []string { return r.uppers }

// LogPath is where a log of the action called name ("stdout",
// "stderr") goes once it outgrows memory; Release removes it.
func (r *ExecRoot) LogPath(name string) string { return r.dir.file(name) }

// CreateParents creates, before the action runs, its working directory
// and the parent directory of each output path (all relative to the
// exec root), as clients of REAPI 2.0 (Bazel 4) expect.
func (r *ExecRoot) CreateParents(workingDirectory string, outputPaths []string) error {
	if err := outputs.MkdirAll(r.inputs, r.uppers, workingDirectory); err != nil {
		return util.StatusWrapf(err, "Failed to create the working directory %q", workingDirectory)
	}
	for _, p := range outputPaths {
		if err := outputs.MkdirAll(r.inputs, r.uppers, path.Dir(p)); err != nil {
			return util.StatusWrapf(err, "Failed to create the parent directory of output %q", p)
		}
	}
	return nil
}

// Ran takes back what the sandbox returned of a run on Mounts: its disk
// budget, which now holds the upper directories (closed by Release),
// and when its PID 1 is gone, after which the directory may be reused.
// Without Ran (the sandbox failed) the directory is in an unknown state
// and is removed instead.
func (r *ExecRoot) Ran(run *sandbox.Result) {
	r.ran, r.released, r.diskBudget = true, run.Released, run.DiskBudget
	r.uppers = run.UpperDirs(&sandbox.Spec{Mounts: r.mounts})
}

// Release returns everything: the disk budget is closed, the layers'
// leases are dropped, and the directory goes back to the pool once the
// sandbox that mounted it has been reaped, so that no two overlays ever
// share an upper or work directory. It is idempotent.
func (r *ExecRoot) Release() {
	r.releaseOnce.Do(func() {
		if r.diskBudget != nil {
			r.diskBudget.Close()
		}
		r.inputs.Release()
		releaseAll(r.below)
		if !r.ran {
			r.pool.discard(r.dir)
			return
		}
		go func() {
			if r.released != nil {
				<-r.released
			}
			r.pool.put(r.dir)
		}()
	})
}

func releaseAll(leases []layers.LayerLease) {
	for _, l := range leases {
		l.Release()
	}
}
