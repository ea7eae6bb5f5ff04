package layers

import (
	"context"
	"sync"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// directoryFetcher loads Directory messages level by level with
// bounded parallelism and keeps them in a memory cache bounded by
// encoded size, so that actions sharing subtrees (toolchains, source
// trees) don't refetch or recheck them.
type directoryFetcher struct {
	storage     *storage.Storage
	parallelism int

	mu          sync.Mutex
	cache       *lruIndex[digest.Digest, *dirInfo]
	cachedBytes int64
	maxBytes    int64
}

func newDirectoryFetcher(store *storage.Storage, maxBytes int64, parallelism int) *directoryFetcher {
	return &directoryFetcher{
		storage:     store,
		parallelism: max(parallelism, 1),
		cache:       newLRUIndex[digest.Digest, *dirInfo](),
		maxBytes:    maxBytes,
	}
}

func (f *directoryFetcher) lookup(d digest.Digest) *dirInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	di, _ := f.cache.get(d)
	return di
}

func (f *directoryFetcher) insert(di *dirInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.cache.peek(di.digest); ok {
		return
	}
	f.cache.put(di.digest, di)
	f.cachedBytes += int64(di.protoSize)
	f.cache.oldestFirst(func(d digest.Digest, old *dirInfo) bool {
		if f.cachedBytes <= f.maxBytes {
			return false
		}
		f.cache.remove(d)
		f.cachedBytes -= int64(old.protoSize)
		return true
	})
}

// fetchTree loads every Directory reachable from root. Directories
// named by bitzel.layers properties are loaded too, but only those of
// directories reached through ordinary entries: a listed tree is
// materialised whole, so properties inside it mean nothing and must
// not make the fetch fail. All missing digests are returned together.
//
// A tree deeper than maxDepth is rejected while fetching, so that a
// long chain of directories can neither cost unbounded round trips nor
// deep recursion later.
func (f *directoryFetcher) fetchTree(ctx context.Context, root digest.Digest, maxDepth int) (tree, []digest.Digest, error) {
	type item struct {
		d         digest.Digest
		interpret bool
	}
	t := tree{}
	visited := map[item]bool{}
	var missing []digest.Digest
	level := []item{{root, true}}
	for depth := 0; len(level) > 0; depth++ {
		// Listed trees sit one level lower in this walk than in
		// the tree they are stacked in, hence the +1.
		if depth > maxDepth+1 {
			return nil, nil, status.Errorf(codes.InvalidArgument, "input root: directory depth exceeds the limit of %d", maxDepth)
		}
		var toFetch []digest.Digest
		queued := map[digest.Digest]bool{}
		for _, it := range level {
			if _, ok := t[it.d]; ok || queued[it.d] {
				continue
			}
			if di := f.lookup(it.d); di != nil {
				t[it.d] = di
				continue
			}
			queued[it.d] = true
			toFetch = append(toFetch, it.d)
		}
		fetched, m, err := f.fetch(ctx, toFetch)
		if err != nil {
			return nil, nil, err
		}
		missing = append(missing, m...)
		for _, di := range fetched {
			f.insert(di)
			t[di.digest] = di
		}

		var next []item
		enqueue := func(it item) {
			// A subtree walked in interpreting mode has had all
			// of its directories fetched already.
			if !visited[it] && !visited[item{it.d, true}] {
				visited[it] = true
				next = append(next, it)
			}
		}
		for _, it := range level {
			di, ok := t[it.d]
			if !ok {
				continue
			}
			for _, c := range di.dirDigests {
				if c != digest.BadDigest {
					enqueue(item{c, it.interpret})
				}
			}
			if it.interpret {
				for _, l := range di.layers {
					enqueue(item{l, false})
				}
			}
		}
		level = next
	}
	return t, missing, nil
}

// fetch loads and checks the given Directory messages, in parallel.
func (f *directoryFetcher) fetch(ctx context.Context, digests []digest.Digest) ([]*dirInfo, []digest.Digest, error) {
	var mu sync.Mutex
	var out []*dirInfo
	missing, err := f.storage.FetchBlobs(ctx, digests, f.parallelism, f.storage.MaximumMessageSizeBytes, func(d digest.Digest, data []byte) error {
		var dir remoteexecution.Directory
		if err := proto.Unmarshal(data, &dir); err != nil {
			return status.Errorf(codes.InvalidArgument, "Directory %s: %s", d, err)
		}
		di := newDirInfo(d, &dir, len(data))
		mu.Lock()
		out = append(out, di)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, nil, util.StatusWrap(err, "Failed to fetch directories")
	}
	return out, missing, nil
}
