package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/storage"

	"github.com/bitzel/bitzel-worker/proto/configuration"
	"github.com/bitzel/bitzel-worker/proto/remoteworker"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/bitzel/bitzel-worker/worker/cluster"
	"github.com/bitzel/bitzel-worker/worker/statuspage"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/global"
	bb_grpc "github.com/buildbarn/bb-storage/pkg/grpc"
	"github.com/buildbarn/bb-storage/pkg/program"
	blobstorepb "github.com/buildbarn/bb-storage/pkg/proto/configuration/blobstore"
	grpcpb "github.com/buildbarn/bb-storage/pkg/proto/configuration/grpc"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func workerCommand(args []string) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: bitzel-worker worker --config FILE.jsonnet

Joins a Buildbarn cluster in place of bb_worker + bb_runner: takes
actions from bb_scheduler, runs them in sandboxes on this machine, and
reads and writes the CAS and Action Cache of bb_storage (or any REAPI
storage). FILE is a WorkerConfiguration in Jsonnet (see
proto/configuration and configs/worker.jsonnet, which reads
BITZEL_WORKER_INDEX, 0 unless set, to tell several workers on one host
apart). SIGTERM drains:
the worker asks the scheduler for no more work, finishes and reports
the actions it is running, then exits.

`)
		printVisibleDefaults(fs)
	}
	configPath := fs.String("config", "", "Jsonnet configuration `file` (a WorkerConfiguration)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *configPath == "" {
		usageError("worker", "missing --config FILE.jsonnet (a WorkerConfiguration, e.g. configs/worker.jsonnet)")
		return 2
	}
	if fs.NArg() > 0 {
		usageError("worker", "unexpected arguments %q", fs.Args())
		return 2
	}
	// Buildbarn's program lifecycle (routines in a program.Group, whose
	// dependencies outlive their dependents), but with an exit status
	// of our own: program.RunMain re-raises the signal after a drain
	// and races that against os.Exit(1), so a clean drain would end
	// one way or the other. Here: 0 after a clean drain, 1 after an
	// error. A second signal exits at once, abandoning running
	// actions (the scheduler gives them to another worker once it
	// stops hearing from this one).
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-signals
		log.Printf("%v: draining", sig)
		cancel()
		sig = <-signals
		log.Printf("%v again: exiting without finishing the running actions", sig)
		os.Exit(1)
	}()
	err := program.RunLocal(ctx, func(ctx context.Context, siblingsGroup, dependenciesGroup program.Group) error {
		return runWorker(ctx, siblingsGroup, dependenciesGroup, *configPath)
	})
	if err != nil {
		log.Print("Fatal error: ", err)
		return 1
	}
	return 0
}

func runWorker(ctx context.Context, siblingsGroup, dependenciesGroup program.Group, configPath string) error {
	var c configuration.WorkerConfiguration
	if err := readWorkerConfiguration(configPath, &c); err != nil {
		return err
	}
	globalConfiguration, diagnostics := takeOverDiagnostics(c.Global)
	lifecycleState, grpcClientFactory, err := global.ApplyConfiguration(globalConfiguration, dependenciesGroup)
	if err != nil {
		return util.StatusWrap(err, "Failed to apply global configuration options")
	}
	logger := log.New(log.Writer(), "", log.LstdFlags|log.Lmicroseconds)
	if len(c.Runners) == 0 {
		return status.Error(codes.InvalidArgument, "Cannot start worker without any runners")
	}
	settings := defaultExecutorSettings()
	if err := settings.apply(c.Executor); err != nil {
		return util.StatusWrapWithCode(err, codes.InvalidArgument, "Invalid executor configuration")
	}

	// Storage: the cluster's CAS and AC. Its connections are
	// dependencies, so they outlive the drain, which still uploads.
	storage, err := newStorageFromConfiguration(dependenciesGroup, c.Blobstore, grpcClientFactory, int(c.MaximumMessageSizeBytes), logger)
	if err != nil {
		return err
	}

	// Scheduler connection.
	schedulerConnection, err := grpcClientFactory.NewClientFromConfiguration(clusterClientConfiguration(c.Scheduler), dependenciesGroup)
	if err != nil {
		return util.StatusWrap(err, "Failed to create scheduler RPC client")
	}
	operationQueue := remoteworker.NewOperationQueueClient(schedulerConnection)

	// Sandbox and caches, shared by every slot of every runner, in a
	// data directory no other worker uses.
	dataDir, err := openDataDirectory(settings.dataDir, settings.actionGroup())
	if err != nil {
		return err
	}
	defer dataDir.Close()
	m, err := newMachine(&settings, storage, logger)
	if err != nil {
		return util.StatusWrap(err, "Failed to set up sandboxes and caches")
	}
	defer m.Close()
	recorder := statuspage.NewRecorder(recentActions(c.StatusPageRecentActions))
	m.recorder = recorder
	// Always a store, if an empty one: an action naming an image no
	// runner offers does not get this far (exact platform matching
	// refuses it first), one naming an offered image finds it here.
	containerImages, err := openWorkerContainerImages(&c, settings.dataDir, m.layerCache)
	if err != nil {
		return err
	}
	m.containerImages = containerImages
	if len(c.ContainerImages) > 0 {
		logger.Printf("container images: %d configured (containerImages), offered by the runners whose platform names them", len(c.ContainerImages))
	}

	clients, slots, err := newClusterClients(&c, operationQueue, m, logger)
	if err != nil {
		return err
	}

	// Metrics and /-/healthy, as every Buildbarn binary serves them.
	lifecycleState.MarkReadyAndWait(siblingsGroup)
	if diagnostics != nil {
		// The queue is bb_scheduler's: no QueueLength.
		serveDiagnostics(diagnostics, lifecycleState, statuspage.NewHandler(statuspage.Options{
			Recorder:                  recorder,
			ContentAddressableStorage: storage.ContentAddressableStorage,
			MaximumMessageSizeBytes:   storage.MaximumMessageSizeBytes,
			Gatherer:                  statusPageGatherer,
			Slots:                     slots,
			DataDirectory:             settings.dataDir,
			DiskBudgetBytes:           settings.fileCacheSize + settings.layerCacheSize,
		}), siblingsGroup, grpcClientFactory)
	}

	var wg sync.WaitGroup
	for _, client := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := client.Run(ctx); err != nil {
				logger.Printf("worker: %v", err)
			}
		}()
	}
	logger.Printf("synchronizing with the scheduler at %s", c.Scheduler.GetAddress())
	<-ctx.Done()
	logger.Printf("draining: asking the scheduler for no more work; running actions finish and are reported")
	wg.Wait()
	logger.Printf("drained")
	return nil
}

// newClusterClients makes one scheduler Client per runner of c, and
// an Executor on m per slot: each slot reports its own worker ID as
// ExecutedActionMetadata.worker, as bb_worker does. It returns them
// with the number of slots in all.
func newClusterClients(c *configuration.WorkerConfiguration, operationQueue remoteworker.OperationQueueClient, m *machine, logger *log.Logger) ([]cluster.Client, int, error) {
	var schedulerWorkerTimeout time.Duration
	if err := setDuration(&schedulerWorkerTimeout, c.SchedulerWorkerTimeout, "schedulerWorkerTimeout"); err != nil {
		return nil, 0, util.StatusWrapWithCode(err, codes.InvalidArgument, "Invalid configuration")
	}
	reportDelay, err := stageReportDelay(c)
	if err != nil {
		return nil, 0, err
	}
	var clients []cluster.Client
	slots := 0
	for i, runner := range c.Runners {
		instanceNamePrefix, err := digest.NewInstanceName(runner.InstanceNamePrefix)
		if err != nil {
			return nil, 0, util.StatusWrapf(err, "Runner %d: invalid instance name prefix %#v", i, runner.InstanceNamePrefix)
		}
		concurrency := int(runner.Concurrency)
		if concurrency == 0 {
			concurrency = 1
		}
		platform := runner.Platform
		offer, err := runnerPlatformOffer(i, runner)
		if err != nil {
			return nil, 0, err
		}
		client, err := cluster.NewClientWithSlotExecutors(operationQueue, func(slot int, workerName string) (worker.Executor, error) {
			return m.newExecutor(filepath.Join(m.settings.dataDir, "build", fmt.Sprintf("%d-%d", i, slot)), workerName, offer)
		}, cluster.Options{
			WorkerID:           runner.WorkerId,
			InstanceNamePrefix: instanceNamePrefix,
			Platform:           platform,
			SizeClass:          runner.SizeClass,
			Concurrency:        concurrency,
			WorkerTimeout:      schedulerWorkerTimeout,
			StageReportDelay:   reportDelay,
		})
		if err != nil {
			return nil, 0, util.StatusWrapf(err, "Runner %d", i)
		}
		clients = append(clients, client)
		slots += concurrency
		logger.Printf("runner %d: %d slots, worker ID %s, instance name prefix %q, platform %s, size class %d",
			i, concurrency, workerIDString(runner.WorkerId), runner.InstanceNamePrefix, platformString(platform), runner.SizeClass)
	}
	return clients, slots, nil
}

// workerIndexVariable tells several workers on one host apart in
// configs/worker.jsonnet (std.extVar: every environment variable is
// one). It is 0 when unset, so that the sample works as written.
const workerIndexVariable = "BITZEL_WORKER_INDEX"

func readWorkerConfiguration(path string, c *configuration.WorkerConfiguration) error {
	if _, ok := os.LookupEnv(workerIndexVariable); !ok {
		os.Setenv(workerIndexVariable, "0")
	}
	if err := util.UnmarshalConfigurationFromFile(path, c); err != nil {
		return util.StatusWrapf(err, "Failed to read configuration from %s", path)
	}
	return nil
}

// newStorageFromConfiguration connects to the cluster's CAS and AC.
// Only gRPC backends are supported: bb-storage's BlobAccess
// configuration, which has all the others, adds some 15 MB to the
// binary, and a worker has no use for them that a bb_storage frontend
// (sharding, mirroring) or its own caches (read caching) do not serve
// better.
func newStorageFromConfiguration(group program.Group, c *blobstorepb.BlobstoreConfiguration, grpcClientFactory bb_grpc.ClientFactory, maximumMessageSizeBytes int, logger *log.Logger) (*storage.Storage, error) {
	casGRPC, err := grpcBackend(c.GetContentAddressableStorage(), "contentAddressableStorage", false)
	if err != nil {
		return nil, err
	}
	acGRPC, err := grpcBackend(c.GetActionCache(), "actionCache", true)
	if err != nil {
		return nil, err
	}
	casConnection, err := grpcClientFactory.NewClientFromConfiguration(clusterClientConfiguration(casGRPC.Client), group)
	if err != nil {
		return nil, util.StatusWrap(err, "Failed to create Content Addressable Storage RPC client")
	}
	acConnection, err := grpcClientFactory.NewClientFromConfiguration(clusterClientConfiguration(acGRPC.Client), group)
	if err != nil {
		return nil, util.StatusWrap(err, "Failed to create Action Cache RPC client")
	}
	storage, err := storage.NewGRPCStorage(casConnection, acConnection, maximumMessageSizeBytes)
	if err != nil {
		return nil, err
	}
	// As bb-storage's configuration does for every CAS: the empty
	// blob never needs a round trip.
	storage.ContentAddressableStorage = blobstore.NewEmptyBlobInjectingBlobAccess(storage.ContentAddressableStorage)
	logger.Printf("storage: CAS at %s, Action Cache at %s", casGRPC.Client.GetAddress(), acGRPC.Client.GetAddress())
	return storage, nil
}

// clusterFlowControlWindowBytes is the static HTTP/2 flow-control
// window (per stream and per connection) of the worker's connections
// to the scheduler and the storage, where the configuration sets none:
// the most grpc-go's dynamic windows ever grow to (its BDP estimator's
// limit), so no transfer is slower than with them.
const clusterFlowControlWindowBytes = 16 << 20

// clusterClientConfiguration is c with static flow-control windows
// unless it sets either window itself. With grpc-go's default dynamic
// windows, the first DATA frame of every response that arrives while
// no estimate is under way makes the client send a WINDOW_UPDATE and a
// BDP PING, which the server must read and answer; a worker's calls
// are small and spaced out (one Synchronize, one Command read and one
// Action Cache write per trivial action), so that is nearly every
// call: a write and two reads more in this process and a read and a
// write more in bb_scheduler or bb_storage per call, to tune a window
// that such calls never fill. c is not modified.
func clusterClientConfiguration(c *grpcpb.ClientConfiguration) *grpcpb.ClientConfiguration {
	if c == nil || c.InitialWindowSizeBytes != 0 || c.InitialConnWindowSizeBytes != 0 {
		return c
	}
	c = proto.Clone(c).(*grpcpb.ClientConfiguration)
	c.InitialWindowSizeBytes = clusterFlowControlWindowBytes
	c.InitialConnWindowSizeBytes = clusterFlowControlWindowBytes
	return c
}

// grpcBackend returns the gRPC backend a BlobAccessConfiguration names.
func grpcBackend(c *blobstorepb.BlobAccessConfiguration, name string, writeOnly bool) (*blobstorepb.GrpcBlobAccessConfiguration, error) {
	if checking := c.GetCompletenessChecking(); checking != nil && writeOnly {
		// Completeness is checked on reads, which this worker
		// never makes of the Action Cache.
		c = checking.Backend
	}
	switch backend := c.GetBackend().(type) {
	case *blobstorepb.BlobAccessConfiguration_Grpc:
		if backend.Grpc.EnableCompression {
			return nil, status.Errorf(codes.InvalidArgument, "blobstore.%s: enableCompression is not supported", name)
		}
		if backend.Grpc.Client == nil {
			return nil, status.Errorf(codes.InvalidArgument, "blobstore.%s.grpc: no client configuration", name)
		}
		return backend.Grpc, nil
	case nil:
		return nil, status.Errorf(codes.InvalidArgument, "blobstore.%s: not configured", name)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "blobstore.%s: backend %T is not supported; bitzel-worker takes a grpc backend (point it at a bb_storage frontend)", name, backend)
	}
}

func workerIDString(workerID map[string]string) string {
	if len(workerID) == 0 {
		return "{}"
	}
	return cluster.WorkerName(workerID)
}

// runnerPlatformOffer is what runner i's executors accept. Exact
// matching is the default: bb_scheduler routes by exact platform, and
// an action reaching a slot whose platform it does not match exactly
// came through a queue that is not this runner's.
func runnerPlatformOffer(i int, runner *configuration.RunnerConfiguration) (worker.PlatformOffer, error) {
	matching, err := platformMatching(runner.PlatformMatching, worker.PlatformMatchExact)
	if err != nil {
		return worker.PlatformOffer{}, status.Errorf(codes.InvalidArgument, "runners[%d].platformMatching: %v", i, err)
	}
	return worker.PlatformOffer{
		Platform: runner.Platform,
		Matching: matching,
		HowToOffer: func(properties []string) string {
			return fmt.Sprintf("add %s to runners[%d].platform of the worker configuration and to the platform queue of bb_scheduler that routes these actions", strings.Join(properties, ", "), i)
		},
	}, nil
}

func platformString(platform *remoteexecution.Platform) string {
	var parts []string
	for _, p := range platform.GetProperties() {
		parts = append(parts, p.Name+"="+p.Value)
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, ",")
}

// stageReportDelay is stageReportDelay of c as cluster.Options takes it:
// 0 (unset) for the default, negative for "report every change at
// once", which the configuration spells 0s.
func stageReportDelay(c *configuration.WorkerConfiguration) (time.Duration, error) {
	if c.StageReportDelay == nil {
		return 0, nil
	}
	if err := c.StageReportDelay.CheckValid(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "Invalid configuration: stageReportDelay: %v", err)
	}
	if d := c.StageReportDelay.AsDuration(); d > 0 {
		return d, nil
	}
	return -1, nil
}
