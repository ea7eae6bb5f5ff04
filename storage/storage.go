package storage

import (
	"context"
	"log"
	"os"
	"path/filepath"
	"sync"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/grpcclients"
	"github.com/buildbarn/bb-storage/pkg/blobstore/local"
	"github.com/buildbarn/bb-storage/pkg/blockdevice"
	"github.com/buildbarn/bb-storage/pkg/capabilities"
	"github.com/buildbarn/bb-storage/pkg/clock"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/filesystem"
	"github.com/buildbarn/bb-storage/pkg/filesystem/path"
	localpb "github.com/buildbarn/bb-storage/pkg/proto/blobstore/local"
	"github.com/buildbarn/bb-storage/pkg/random"
	"github.com/buildbarn/bb-storage/pkg/util"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultMaximumMessageSizeBytes matches gRPC-Go's default receive
// limit; batches and Directory messages are kept below it.
const DefaultMaximumMessageSizeBytes = 16 << 20

// Storage bundles the Content Addressable Storage and the Action Cache.
// Both are bb-storage BlobAccess objects, so the embedded server can
// expose them with bb-storage's gRPC servers and the executor can use
// them the same way whether they are local or remote.
type Storage struct {
	ContentAddressableStorage blobstore.BlobAccess
	ActionCache               blobstore.BlobAccess
	// MaximumMessageSizeBytes bounds protos read from storage and the
	// size of batched requests.
	MaximumMessageSizeBytes int
	// MaximumBlobSizeBytes is the largest blob the CAS can hold (a
	// local store's block size), 0 when unknown. Outputs past it are
	// refused before they are hashed.
	MaximumBlobSizeBytes int64

	// batch is set for remote storage, where many small blobs are
	// cheaper in one BatchReadBlobs/BatchUpdateBlobs round trip than
	// in one ByteStream call each. Local storage reads blobs directly.
	batch batchBlobAccess
	close func() error
}

// Close flushes persistent state of a local store. Writes after Close
// fail. It is a no-op for remote storage.
func (s *Storage) Close() error {
	if s.close == nil {
		return nil
	}
	c := s.close
	s.close = nil
	return c()
}

var (
	localCASCapabilities = capabilities.NewStaticProvider(&remoteexecution.ServerCapabilities{
		CacheCapabilities: &remoteexecution.CacheCapabilities{
			DigestFunctions: digest.SupportedDigestFunctions,
		},
	})
	localACCapabilities = capabilities.NewStaticProvider(&remoteexecution.ServerCapabilities{
		CacheCapabilities: &remoteexecution.CacheCapabilities{
			ActionCacheUpdateCapabilities: &remoteexecution.ActionCacheUpdateCapabilities{
				UpdateEnabled: true,
			},
			SymlinkAbsolutePathStrategy: remoteexecution.SymlinkAbsolutePathStrategy_ALLOWED,
		},
	})
)

// NewLocalStorage opens (creating when needed) a persistent CAS and AC
// under dir, each a bb-storage block-device-backed local store on a
// plain file. This repeats what bb-storage's configuration package does
// for a "local" backend with "blocksOnBlockDevice" and "persistent",
// without linking that package (it pulls in every cloud backend).
func NewLocalStorage(dir string, casSizeBytes, acSizeBytes int64) (*Storage, error) {
	registerMetrics()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	cas, maximumBlobSize, err := newLocalBlobAccess(ctx, &wg, filepath.Join(dir, "cas"), casSizeBytes, true)
	if err != nil {
		cancel()
		return nil, util.StatusWrap(err, "Failed to open local CAS")
	}
	ac, _, err := newLocalBlobAccess(ctx, &wg, filepath.Join(dir, "ac"), acSizeBytes, false)
	if err != nil {
		cancel()
		wg.Wait()
		return nil, util.StatusWrap(err, "Failed to open local AC")
	}
	return &Storage{
		ContentAddressableStorage: newOutOfSpaceReportingBlobAccess(cas),
		ActionCache:               newOutOfSpaceReportingBlobAccess(ac),
		MaximumMessageSizeBytes:   DefaultMaximumMessageSizeBytes,
		MaximumBlobSizeBytes:      maximumBlobSize,
		close: func() error {
			// Cancelling makes the syncers do a final sync and
			// write the persistent state before returning. A syncer
			// that cannot write (its directory is gone, the disk is
			// full) retries for ever: give up after a while, so the
			// worker still exits; the store then restarts empty.
			cancel()
			done := make(chan struct{})
			go func() {
				wg.Wait()
				close(done)
			}()
			select {
			case <-done:
				return nil
			case <-time.After(localStoreCloseTimeout):
				return status.Errorf(codes.Unavailable, "Local storage in %q could not write its state within %v", dir, localStoreCloseTimeout)
			}
		},
	}, nil
}

// localStoreCloseTimeout bounds the final sync of a local store.
const localStoreCloseTimeout = 15 * time.Second

// Block counts as in bb-storage's sample configurations.
const (
	localOldBlocks     = 8
	localCurrentBlocks = 24
	localSpareBlocks   = 3
)

// newLocalBlobAccess also returns the largest blob the store holds: one
// block.
func newLocalBlobAccess(ctx context.Context, wg *sync.WaitGroup, dir string, sizeBytes int64, isCAS bool) (blobstore.BlobAccess, int64, error) {
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		return nil, 0, util.StatusWrapWithCode(err, codes.Internal, "Failed to create storage directory")
	}
	newBlocks := 1
	readBufferFactory := blobstore.ACReadBufferFactory
	storageType := "ac"
	digestKeyFormat := digest.KeyWithInstance
	capabilitiesProvider := localACCapabilities
	if isCAS {
		// CAS objects are immutable, so several blocks may take
		// writes at once; AC entries must be overwritable and
		// therefore need exactly one "new" block.
		newBlocks = 3
		readBufferFactory = blobstore.CASReadBufferFactory
		storageType = "cas"
		digestKeyFormat = digest.KeyWithoutInstance
		capabilitiesProvider = localCASCapabilities
	}
	blockCount := localOldBlocks + localCurrentBlocks + newBlocks + localSpareBlocks
	if sizeBytes < int64(blockCount)*1<<20 {
		sizeBytes = int64(blockCount) * 1 << 20
	}

	_, err := os.Stat(filepath.Join(dir, "blocks"))
	blocksExisted := err == nil
	blocksDevice, sectorSizeBytes, sectorCount, err := blockdevice.NewBlockDeviceFromFile(filepath.Join(dir, "blocks"), int(sizeBytes), false)
	if err != nil {
		return nil, 0, util.StatusWrap(err, "Failed to open blocks file")
	}
	blockSectorCount := sectorCount / int64(blockCount)
	blockAllocator := local.NewBlockDeviceBackedBlockAllocator(blocksDevice, readBufferFactory, sectorSizeBytes, blockSectorCount, blockCount, storageType)

	stateDirectory, err := filesystem.NewLocalDirectory(path.LocalFormat.NewParser(filepath.Join(dir, "state")))
	if err != nil {
		return nil, 0, util.StatusWrap(err, "Failed to open persistent state directory")
	}
	stateStore := persistentStateStore{
		PersistentStateStore: local.NewDirectoryBackedPersistentStateStore(stateDirectory),
		statePath:            filepath.Join(dir, "state", "state"),
		blocksExisted:        blocksExisted,
	}
	state, err := stateStore.ReadPersistentState()
	if err != nil {
		return nil, 0, util.StatusWrap(err, "Failed to reload persistent state")
	}
	blockList, initialBlockCount := local.NewPersistentBlockList(blockAllocator, state.OldestEpochId, state.Blocks)

	var globalLock sync.RWMutex
	syncer := local.NewPeriodicSyncer(blockList, &globalLock, stateStore, clock.SystemClock, util.DefaultErrorLogger,
		10*time.Second, 5*time.Second, state.KeyLocationMapHashInitialization, blocksDevice.Sync)
	go func() {
		for {
			syncer.ProcessBlockRelease()
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for syncer.ProcessBlockPut(ctx) {
		}
	}()

	var growthPolicy local.BlockListGrowthPolicy
	if isCAS {
		growthPolicy = local.NewImmutableBlockListGrowthPolicy(localCurrentBlocks, newBlocks)
	} else {
		growthPolicy = local.NewMutableBlockListGrowthPolicy(localCurrentBlocks)
	}
	locationBlobMap := local.NewOldCurrentNewLocationBlobMap(blockList, growthPolicy, util.DefaultErrorLogger, storageType,
		int64(sectorSizeBytes)*blockSectorCount, localOldBlocks, newBlocks, initialBlockCount)

	// One hash table slot per 2 KiB of data, at least 64Ki: the file
	// is sparse, so unused slots cost address space, not disk.
	entries := max(sizeBytes/2048, 1<<16)
	keyLocationDevice, klSectorSize, klSectorCount, err := blockdevice.NewBlockDeviceFromFile(
		filepath.Join(dir, "key_location_map"), int(entries*local.BlockDeviceBackedLocationRecordSize), false)
	if err != nil {
		return nil, 0, util.StatusWrap(err, "Failed to open key-location map file")
	}
	// bb-storage creates its files 0666 less the umask: whatever the
	// umask, and for stores of older versions, they are the worker's
	// alone.
	if err := restrictStorageFiles(dir); err != nil {
		return nil, 0, err
	}
	recordCount := int(int64(klSectorSize) * klSectorCount / local.BlockDeviceBackedLocationRecordSize)
	// FNV-1a modulo a prime disperses best, as bb-storage does.
	for recordCount > 3 && !isPrime(recordCount) {
		recordCount--
	}
	keyLocationMap := local.NewHashingKeyLocationMap(
		local.NewBlockDeviceBackedLocationRecordArray(keyLocationDevice, locationBlobMap),
		recordCount, state.KeyLocationMapHashInitialization, 16, 64, storageType)
	return local.NewFlatBlobAccess(keyLocationMap, locationBlobMap, digestKeyFormat, &globalLock, storageType, capabilitiesProvider), int64(sectorSizeBytes) * blockSectorCount, nil
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for i := 2; i*i <= n; i++ {
		if n%i == 0 {
			return false
		}
	}
	return true
}

// NewGRPCStorage talks to a remote REAPI CAS and AC (bb_storage or any
// other implementation). The two connections may be the same.
func NewGRPCStorage(casConn, acConn grpc.ClientConnInterface, maximumMessageSizeBytes int) (*Storage, error) {
	registerMetrics()
	if casConn == nil || acConn == nil {
		return nil, status.Error(codes.InvalidArgument, "No gRPC connection provided")
	}
	if maximumMessageSizeBytes <= 0 {
		maximumMessageSizeBytes = DefaultMaximumMessageSizeBytes
	}
	return &Storage{
		ContentAddressableStorage: grpcclients.NewCASBlobAccess(casConn, uuid.NewRandom, 64<<10, nil),
		ActionCache:               grpcclients.NewACBlobAccess(acConn, maximumMessageSizeBytes),
		MaximumMessageSizeBytes:   maximumMessageSizeBytes,
		batch:                     newGRPCBatchBlobAccess(casConn, maximumMessageSizeBytes),
	}, nil
}

// restrictStorageFiles makes a local store's directories 0700 and its
// files 0600, where they exist.
func restrictStorageFiles(dir string) error {
	for _, name := range []string{"", "state", "blocks", "key_location_map"} {
		p := filepath.Join(dir, name)
		info, err := os.Lstat(p)
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			return util.StatusWrapWithCode(err, codes.Internal, "Failed to stat storage file")
		}
		mode := os.FileMode(0o600)
		if info.IsDir() {
			mode = 0o700
		}
		if err := os.Chmod(p, mode); err != nil {
			return util.StatusWrapWithCode(err, codes.Internal, "Failed to restrict storage file")
		}
	}
	return nil
}

// persistentStateStore starts a new store quietly: bb-storage's logs
// "Reinitializing data store, as persistent state was not found" on
// every first start, which is no news for a new data directory. A
// store whose blocks were there without the state (the last run
// stopped before its first sync) is said once, with what it means.
type persistentStateStore struct {
	local.PersistentStateStore
	statePath     string
	blocksExisted bool
}

func (s persistentStateStore) ReadPersistentState() (*localpb.PersistentState, error) {
	if _, err := os.Stat(s.statePath); !os.IsNotExist(err) {
		return s.PersistentStateStore.ReadPersistentState()
	}
	if s.blocksExisted {
		log.Printf("storage: %s is missing (the last run stopped before saving it): the store in %s starts empty", s.statePath, filepath.Dir(filepath.Dir(s.statePath)))
	}
	// As bb-storage makes a new one.
	return &localpb.PersistentState{
		OldestEpochId:                    1,
		KeyLocationMapHashInitialization: random.CryptoThreadSafeGenerator.Uint64(),
	}, nil
}
