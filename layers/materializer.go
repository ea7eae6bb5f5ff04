package layers

import (
	"context"
	"sync"
	"time"

	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
)

// Materializer turns an input root digest into read-only layer
// directories arranged as overlay mounts.
type Materializer interface {
	Materialize(ctx context.Context, instanceName digest.InstanceName, root digest.Digest) (*InputRoot, error)
}

// MaterializerOptions tune a Materializer; zero fields take defaults.
type MaterializerOptions struct {
	Planner PlannerOptions
	// Owner receives the directories of every layer built (see
	// Owner); the file cache must be given the same.
	Owner *Owner
	// FetchParallelism bounds concurrent CAS requests of one action.
	FetchParallelism int
	// DirectoryCacheBytes bounds the Directory messages kept in
	// memory (encoded size).
	DirectoryCacheBytes int64
	// PlanCacheEntries and PlanCacheBytes (encoded Directory bytes
	// the plans hold on to) bound how many input roots' plans are
	// kept, which makes placing an already seen input root O(mounts).
	PlanCacheEntries int
	PlanCacheBytes   int64
}

type materializer struct {
	storage *storage.Storage
	files   FileCache
	layers  LayerCache
	options MaterializerOptions
	fetcher *directoryFetcher

	mu        sync.Mutex
	plans     *lruIndex[digest.Digest, *knownPlan]
	planBytes int64
}

// knownPlan is a cached plan with its layers' sizes.
type knownPlan struct {
	*plan
	sizes planSizes
}

// NewMaterializer creates a Materializer that reads from storage and
// keeps files and layers in the given caches.
func NewMaterializer(store *storage.Storage, files FileCache, layers LayerCache, options MaterializerOptions) Materializer {
	registerMetrics()
	options.Planner = options.Planner.withDefaults()
	if options.FetchParallelism <= 0 {
		options.FetchParallelism = 8
	}
	if options.DirectoryCacheBytes <= 0 {
		options.DirectoryCacheBytes = 64 << 20
	}
	if options.PlanCacheEntries <= 0 {
		options.PlanCacheEntries = 256
	}
	if options.PlanCacheBytes <= 0 {
		options.PlanCacheBytes = 256 << 20
	}
	return &materializer{
		storage: store,
		files:   files,
		layers:  layers,
		options: options,
		fetcher: newDirectoryFetcher(store, options.DirectoryCacheBytes, options.FetchParallelism),
		plans:   newLRUIndex[digest.Digest, *knownPlan](),
	}
}

func (m *materializer) Materialize(ctx context.Context, instanceName digest.InstanceName, root digest.Digest) (*InputRoot, error) {
	// Every blob of the tree is read in the action's instance, with
	// the digest function of its root.
	if root.GetInstanceName() != instanceName {
		function, err := instanceName.GetDigestFunction(root.GetDigestFunction().GetEnumValue(), 0)
		if err != nil {
			return nil, util.StatusWrap(err, "Input root")
		}
		if root, err = function.NewDigest(root.GetHashString(), root.GetSizeBytes()); err != nil {
			return nil, util.StatusWrap(err, "Input root")
		}
	}
	// Fast path: a known input root whose layers are all cached is
	// placed without looking at its contents.
	m.mu.Lock()
	known, ok := m.plans.get(root)
	m.mu.Unlock()
	if ok {
		if r, ok := m.leaseAll(root, known); ok {
			return r, nil
		}
	}

	t, missing, err := m.fetcher.fetchTree(ctx, root, m.options.Planner.MaxDepth)
	if err != nil {
		return nil, util.StatusWrap(err, "Failed to fetch input root")
	}
	if len(missing) > 0 {
		return nil, m.reportMissing(ctx, t, missing)
	}
	p, err := planInputRoot(t, root, m.options.Planner)
	if err != nil {
		return nil, err
	}
	known = &knownPlan{plan: p, sizes: countPlanSizes(p)}
	r, err := m.build(ctx, root, known)
	if err != nil {
		return nil, err
	}
	for _, di := range p.t {
		p.sizeBytes += int64(di.protoSize)
	}
	m.mu.Lock()
	if old, ok := m.plans.peek(root); ok {
		m.planBytes -= old.sizeBytes
	}
	m.plans.put(root, known)
	m.planBytes += p.sizeBytes
	m.plans.oldestFirst(func(d digest.Digest, old *knownPlan) bool {
		if m.plans.len() <= m.options.PlanCacheEntries && m.planBytes <= m.options.PlanCacheBytes {
			return false
		}
		m.plans.remove(d)
		m.planBytes -= old.sizeBytes
		return true
	})
	m.mu.Unlock()
	return r, nil
}

// leaseAll leases every layer of the plan if all are cached.
func (m *materializer) leaseAll(root digest.Digest, p *knownPlan) (*InputRoot, bool) {
	r := newInputRoot(root, p.plan)
	uses := layerUses(p.plan, p.sizes)
	for i, pm := range p.mounts {
		for j, l := range pm.layers {
			lease, ok := m.layers.Acquire(l.key)
			if !ok {
				r.Release()
				return nil, false
			}
			r.leases = append(r.leases, lease)
			r.Mounts[i].Layers[j] = lease.Path()
		}
	}
	r.Layers = flattenLayerUses(uses)
	return r, true
}

func (m *materializer) build(ctx context.Context, root digest.Digest, p *knownPlan) (*InputRoot, error) {
	r := newInputRoot(root, p.plan)
	uses := layerUses(p.plan, p.sizes)
	// Set on every return that hands out r.
	defer func() { r.Layers = flattenLayerUses(uses) }()
	type pending struct{ mount, layer int }
	var toBuild []pending
	for i, pm := range p.mounts {
		for j, l := range pm.layers {
			if lease, ok := m.layers.Acquire(l.key); ok {
				r.leases = append(r.leases, lease)
				r.Mounts[i].Layers[j] = lease.Path()
			} else {
				toBuild = append(toBuild, pending{i, j})
			}
		}
	}
	if len(toBuild) == 0 {
		return r, nil
	}

	// Pin every file the missing layers need before building any of
	// them, so that all missing blobs are known at once and eviction
	// cannot pull a file from under a build.
	keys := map[FileKey]struct{}{}
	seen := map[*dirInfo]bool{}
	for _, b := range toBuild {
		collectFileKeys(p.t, p.mounts[b.mount].layers[b.layer].root, seen, keys)
	}
	keyList := make([]FileKey, 0, len(keys))
	for k := range keys {
		keyList = append(keyList, k)
	}
	files, missing, err := m.files.Acquire(ctx, m.storage, keyList)
	if err != nil {
		r.Release()
		return nil, util.StatusWrap(err, "Failed to fetch input files")
	}
	defer files.Release()
	if len(missing) > 0 {
		r.Release()
		return nil, storage.MissingBlobsError(missing)
	}

	// Layers of one action are built one after another: on few cores
	// the file system, not the CPU, is the limit, and concurrent
	// actions already build in parallel.
	built := map[digest.Digest]LayerLease{}
	for _, b := range toBuild {
		l := p.mounts[b.mount].layers[b.layer]
		lease, ok := built[l.key]
		if ok {
			// Same layer twice in one input root: one more lease.
			lease, ok = m.layers.Acquire(l.key)
		}
		if !ok {
			start, builtHere := time.Now(), false
			lease, err = m.layers.GetOrBuildChecked(ctx, l.key, func(ctx context.Context, dir string) (LayerStats, error) {
				builtHere = true
				return buildLayer(ctx, p.t, l.root, dir, files, m.options.Owner)
			}, func(dir string) bool {
				return layerMatches(p.t, l.root, dir, files)
			})
			if err != nil {
				r.Release()
				return nil, util.StatusWrapf(err, "Failed to build layer for %q", displayPath(p.mounts[b.mount].path))
			}
			built[l.key] = lease
			uses[b.mount][b.layer].Built = builtHere
			uses[b.mount][b.layer].Time = time.Since(start)
		}
		r.leases = append(r.leases, lease)
		r.Mounts[b.mount].Layers[b.layer] = lease.Path()
	}
	return r, nil
}

func displayPath(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// reportMissing builds the MISSING precondition failure for a tree
// with missing directories, adding the files of the directories that
// could be read which the CAS lacks too, so that the client learns of
// every missing blob in one round trip.
func (m *materializer) reportMissing(ctx context.Context, t tree, missing []digest.Digest) error {
	files := digest.NewSetBuilder(0)
	for _, di := range t {
		for _, d := range di.fileDigests {
			if d != digest.BadDigest && d.GetSizeBytes() > 0 {
				files.Add(d)
			}
		}
	}
	items := files.Build().Items()
	for start := 0; start < len(items); start += blobstore.RecommendedFindMissingDigestsCount {
		end := min(start+blobstore.RecommendedFindMissingDigestsCount, len(items))
		b := digest.NewSetBuilder(end - start)
		for _, d := range items[start:end] {
			b.Add(d)
		}
		absent, err := m.storage.ContentAddressableStorage.FindMissing(ctx, b.Build())
		if err != nil {
			return util.StatusWrap(err, "Failed to look for missing input files")
		}
		missing = append(missing, absent.Items()...)
	}
	return storage.MissingBlobsError(missing)
}
