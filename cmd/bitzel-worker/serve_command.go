package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/proto/configuration"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/bitzel/bitzel-worker/worker/execution"
	"github.com/bitzel/bitzel-worker/worker/gettree"
	"github.com/bitzel/bitzel-worker/worker/livelogs"
	"github.com/bitzel/bitzel-worker/worker/statuspage"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/completenesschecking"
	"github.com/buildbarn/bb-storage/pkg/blobstore/grpcservers"
	"github.com/buildbarn/bb-storage/pkg/capabilities"
	"github.com/buildbarn/bb-storage/pkg/global"
	"github.com/buildbarn/bb-storage/pkg/program"
	globalpb "github.com/buildbarn/bb-storage/pkg/proto/configuration/global"
	"github.com/buildbarn/bb-storage/pkg/util"
	bb_zstd "github.com/buildbarn/bb-storage/pkg/zstd"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// serveFlags are the settings of `serve`; every one has a default that
// works on a fresh machine.
type serveFlags struct {
	executorSettings
	configPath            string
	listen, metricsListen string
	casSize, acSize       int64
	concurrency           int
	tlsCert, tlsKey       string
	workerName            string
	shutdownGrace         time.Duration
	// Client access: the flag, and the configuration file's settings
	// (nil without one).
	actionCacheReadOnly bool
	serveConfig         *configuration.ServeConfiguration
	recentActions       uint32
	// platform overrides the host's platform properties (see
	// servePlatformOffer).
	platform platformFlag
	// containerImages maps image references to local sources (see
	// openContainerImages).
	containerImages containerImageFlag
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	hostname, _ := os.Hostname()
	d := defaultExecutorSettings()
	fs.StringVar(&f.configPath, "config", "", "Jsonnet configuration `file` (a ServeConfiguration, see proto/configuration); flags given as well override it")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8980", "gRPC `address` of the REAPI services")
	fs.StringVar(&f.metricsListen, "metrics-listen", "127.0.0.1:9980", "HTTP `address` for /metrics and /-/healthy (empty: off)")
	fs.StringVar(&f.dataDir, "data-dir", d.dataDir, "`directory` for the CAS, the caches and running actions")
	fs.Int64Var(&f.casSize, "cas-size", 8<<30, "CAS size in `bytes` (a sparse file)")
	fs.Int64Var(&f.acSize, "ac-size", 64<<20, "Action Cache size in `bytes`")
	fs.Int64Var(&f.fileCacheSize, "file-cache-size", d.fileCacheSize, "file cache budget in `bytes`")
	fs.IntVar(&f.fileCacheFiles, "file-cache-files", d.fileCacheFiles, "file cache budget in `files`")
	fs.Int64Var(&f.layerCacheSize, "layer-cache-size", d.layerCacheSize, "layer cache budget in `bytes`")
	fs.Int64Var(&f.layerCacheInodes, "layer-cache-inodes", d.layerCacheInodes, "layer cache budget in `inodes`")
	fs.IntVar(&f.concurrency, "concurrency", runtime.NumCPU(), "actions run at once")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate `file` (with -tls-key; default: plaintext)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "TLS private key `file`")
	fs.DurationVar(&f.defaultTimeout, "default-timeout", d.defaultTimeout, "timeout of actions that set none")
	fs.DurationVar(&f.maxTime, "max-timeout", d.maxTime, "largest timeout an action may ask for")
	fs.Int64Var(&f.outputLimit, "output-limit", d.outputLimit, "cap on each of stdout and stderr, in `bytes`")
	fs.Int64Var(&f.outputBudgetBytes, "output-budget-bytes", d.outputBudgetBytes, "per-action budget of output file `bytes` to hash and upload (RESOURCE_EXHAUSTED past it)")
	fs.Int64Var(&f.outputBudgetEntries, "output-budget-files", d.outputBudgetEntries, "per-action budget of output files, directories and symlinks (RESOURCE_EXHAUSTED past it)")
	fs.Int64Var(&f.memoryLimit, "memory-limit", d.memoryLimit, "memory limit per action in `bytes` (needs cgroups; 0: none)")
	fs.Int64Var(&f.pidsLimit, "pids-limit", d.pidsLimit, "process limit per action")
	fs.Int64Var(&f.diskBudget, "disk-budget", d.diskBudget, "per-action budget of `bytes` an action may write to its exec root, enforced as it writes (a tmpfs of this size holds its upper directories; 0: unbounded, on the data directory)")
	fs.Int64Var(&f.tmpSize, "tmp-size", d.tmpSize, "size of each action's private /tmp in `bytes`")
	fs.Int64Var(&f.shmSize, "shm-size", d.shmSize, "size of each action's private /dev/shm in `bytes`")
	fs.Int64Var(&f.cpuMillis, "cpu-millis", d.cpuMillis, "CPU bandwidth per action in thousandths of a CPU (needs cgroups; 0: none)")
	fs.StringVar(&f.execRootPath, "exec-root-path", d.execRootPath, "where the exec root appears inside the sandbox")
	fs.BoolVar(&f.hermetic, "hermetic", d.hermetic, "use the input root as the whole root file system (no host userland)")
	fs.StringVar(&f.workerName, "worker-name", hostname, "name reported in ExecutedActionMetadata")
	fs.StringVar(&f.cgroups, "cgroups", d.cgroups, "cgroup hierarchy for limits: auto, v1, v2 or none")
	fs.IntVar(&f.warmSandboxes, "warm-sandboxes", d.warmSandboxes, "sandboxes started with the worker rather than by the first actions (each serves one action after another)")
	fs.StringVar(&f.seccomp, "seccomp", d.seccomp, "system-call filter of actions: default, allow-user-namespaces (actions may unshare -r and mount inside) or off")
	fs.DurationVar(&f.shutdownGrace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long running actions may finish before they are cancelled (a second signal cancels them at once)")
	fs.BoolVar(&f.actionCacheReadOnly, "action-cache-read-only", false, "refuse UpdateActionResult from clients (the worker's own results still go in); default: any client may write any action's result")
	fs.Var(&f.platform, "platform", "platform property `NAME=VALUE` to offer, repeatable; replaces the host default (OSFamily and ISA, in the REAPI lexicon's spelling) of that NAME, an empty VALUE removes it")
	fs.Var(&f.containerImages, "container-image", "`docker://NAME[:TAG|@DIGEST]=PATH`, repeatable: an OCI image layout directory or a docker save archive that actions naming the image in their container-image platform property run in; images are never pulled")
	// Settings without a flag: configuration files only.
	f.cgroupName = d.cgroupName
}

func serveCommand(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: bitzel-worker serve [flags]

Serves the Remote Execution API (Capabilities, CAS, ActionCache,
ByteStream, Execution) on one port, storing blobs on local disk and
running actions in sandboxes on this machine. No flag is required.
--config reads the same settings, and Buildbarn's global ones (logging,
diagnostics HTTP server, tracing), from a Jsonnet file.

`)
		printVisibleDefaults(fs)
	}
	var f serveFlags
	f.register(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		usageError("serve", "unexpected arguments %q", fs.Args())
		return 2
	}
	var global *globalpb.Configuration
	if f.configPath != "" {
		var c configuration.ServeConfiguration
		if err := util.UnmarshalConfigurationFromFile(f.configPath, &c); err != nil {
			log.Printf("serve: read configuration from %s: %v", f.configPath, err)
			return 1
		}
		if err := f.apply(&c); err != nil {
			log.Printf("serve: configuration %s: %v", f.configPath, err)
			return 1
		}
		global = c.Global
		f.serveConfig = &c
		// Parsed again: flags given on the command line win over
		// the file. Repeatable flags start again, or they would
		// count twice.
		f.platform = nil
		if err := fs.Parse(args); err != nil {
			return 2
		}
	}
	if err := runServe(&f, global); err != nil {
		log.Printf("serve: %v", err)
		return 1
	}
	return 0
}

// apply overrides the settings with what a ServeConfiguration sets.
func (f *serveFlags) apply(c *configuration.ServeConfiguration) error {
	setString(&f.listen, c.ListenAddress)
	setString(&f.tlsCert, c.TlsCertificatePath)
	setString(&f.tlsKey, c.TlsPrivateKeyPath)
	setInt64(&f.casSize, c.ContentAddressableStorageSizeBytes)
	setInt64(&f.acSize, c.ActionCacheSizeBytes)
	if c.Concurrency > 0 {
		f.concurrency = int(c.Concurrency)
	}
	setString(&f.workerName, c.WorkerName)
	if err := setDuration(&f.shutdownGrace, c.ShutdownGracePeriod, "shutdownGracePeriod"); err != nil {
		return err
	}
	f.recentActions = c.StatusPageRecentActions
	if c.Global.GetDiagnosticsHttpServer() != nil {
		// Buildbarn's diagnostics server takes over /metrics
		// and /-/healthy.
		f.metricsListen = ""
	}
	return f.executorSettings.apply(c.Executor)
}

// runServe runs serve, within Buildbarn's global configuration when a
// configuration file gives one: its logging, tracing and diagnostics
// HTTP server live in a program.Group, which ends when serve does.
func runServe(f *serveFlags, globalConfiguration *globalpb.Configuration) error {
	if globalConfiguration == nil && f.serveConfig.GetAuthenticationPolicy() == nil && f.serveConfig.GetActionCacheAuthorizers() == nil && f.serveConfig.GetContentAddressableStorageAuthorizers() == nil {
		access, err := newClientAccess(f.serveConfig, f.actionCacheReadOnly, nil, nil)
		if err != nil {
			return err
		}
		return serve(context.Background(), f, access, func(http.Handler) {})
	}
	if globalConfiguration == nil {
		// Authenticators and authorizers may need a program group
		// and gRPC clients (remote ones, JWKS refreshes).
		globalConfiguration = &globalpb.Configuration{}
	}
	globalConfiguration, diagnostics := takeOverDiagnostics(globalConfiguration)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	return program.RunLocal(ctx, func(ctx context.Context, siblingsGroup, dependenciesGroup program.Group) error {
		// The diagnostics server stops once serve has returned.
		defer cancel()
		lifecycleState, grpcClientFactory, err := global.ApplyConfiguration(globalConfiguration, dependenciesGroup)
		if err != nil {
			return util.StatusWrap(err, "Failed to apply global configuration options")
		}
		access, err := newClientAccess(f.serveConfig, f.actionCacheReadOnly, dependenciesGroup, grpcClientFactory)
		if err != nil {
			return err
		}
		return serve(ctx, f, access, func(statusPage http.Handler) {
			lifecycleState.MarkReadyAndWait(siblingsGroup)
			if diagnostics != nil {
				serveDiagnostics(diagnostics, lifecycleState, statusPage, siblingsGroup, grpcClientFactory)
			}
		})
	})
}

// serve runs the REAPI front end until a signal or ctx ends it; ready
// is called once it accepts requests, with the status page.
func serve(ctx context.Context, f *serveFlags, access *clientAccess, ready func(statusPage http.Handler)) error {
	// log.Writer: the global configuration may send logs to files too.
	logger := log.New(log.Writer(), "", log.LstdFlags|log.Lmicroseconds)
	// Before anything in the data directory is touched: one worker
	// per data directory.
	dataDir, err := openDataDirectory(f.dataDir, f.actionGroup())
	if err != nil {
		return err
	}
	defer dataDir.Close()
	storage, err := openServeStorage(f.dataDir, f.casSize, f.acSize)
	if err != nil {
		return err
	}
	defer func() {
		if err := storage.Close(); err != nil {
			logger.Printf("%v", err)
		}
	}()

	// Sandbox and caches, shared by all actions.
	m, err := newMachine(&f.executorSettings, storage, logger)
	if err != nil {
		return err
	}
	defer m.Close()
	recorder := statuspage.NewRecorder(recentActions(f.recentActions))
	m.recorder = recorder
	platform, executor, err := newServeExecutor(f, m)
	if err != nil {
		return err
	}
	serverOptions := access.serverOptions()
	if f.tlsCert != "" || f.tlsKey != "" {
		creds, err := credentials.NewServerTLSFromFile(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		serverOptions = append(serverOptions, grpc.Creds(creds))
	}
	front := newServeFrontEnd(f, serverOptions, storage, executor, recorder, access)

	// Signals are taken before the "serving" line: a client (or a
	// test) that stops serve as soon as it reads that line would
	// otherwise be lost when SIGINT was ignored at start, as a shell
	// does for background jobs (a rootless CI run hung on it;
	// TestServeStopsOnASignalSentAsSoonAsItSaysItIsServing).
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)
	listener, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	if f.metricsListen != "" {
		metricsListener, err := net.Listen("tcp", f.metricsListen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", f.metricsListen, err)
		}
		logger.Printf("metrics on %s (/metrics, /-/healthy, status page at /status/)", metricsListener.Addr())
		go serveMetrics(metricsListener, logger, front.statusPage)
	}
	logger.Printf("serving REAPI on %s (data in %s, %d actions at once, platform %s)", listener.Addr(), f.dataDir, f.concurrency, platformString(platform.Platform))
	return front.run(ctx, listener, signals, f.shutdownGrace, logger, ready)
}

// openServeStorage opens serve's persistent local CAS and AC.
func openServeStorage(dataDir string, casSize, acSize int64) (*storage.Storage, error) {
	storage, err := storage.NewLocalStorage(filepath.Join(dataDir, "storage"), casSize, acSize)
	if err != nil {
		return nil, err
	}
	// The empty blob is always present (REAPI): actions with empty
	// stdout or stderr refer to it, and without it the completeness
	// check would turn every such Action Cache entry into a miss.
	storage.ContentAddressableStorage = blobstore.NewEmptyBlobInjectingBlobAccess(storage.ContentAddressableStorage)
	return storage, nil
}

// newServeExecutor builds the executor of serve's actions on m:
// materialisation, outputs, and the decorator stack every action goes
// through, with the platform serve offers.
func newServeExecutor(f *serveFlags, m *machine) (worker.PlatformOffer, worker.Executor, error) {
	platform, err := servePlatformOffer(f)
	if err != nil {
		return worker.PlatformOffer{}, nil, err
	}
	containerImages, err := openContainerImages(f, m.layerCache)
	if err != nil {
		return worker.PlatformOffer{}, nil, err
	}
	// Always set: an image that is not configured is refused with how
	// to provide it, not as an unoffered property.
	platform.ContainerImages = containerImages.Check
	m.containerImages = containerImages
	executor, err := m.newExecutor(filepath.Join(f.dataDir, "build"), f.workerName, platform)
	if err != nil {
		return worker.PlatformOffer{}, nil, err
	}
	return platform, executor, nil
}

// serveFrontEnd is serve's gRPC server with the REAPI services
// registered, and the status page of the actions it runs.
type serveFrontEnd struct {
	server     *grpc.Server
	execution  *execution.Server
	health     *health.Server
	statusPage http.Handler
}

func newServeFrontEnd(f *serveFlags, serverOptions []grpc.ServerOption, storage *storage.Storage, executor worker.Executor, recorder *statuspage.Recorder, access *clientAccess) *serveFrontEnd {
	serverOptions = append(serverOptions,
		grpc.MaxRecvMsgSize(storage.MaximumMessageSizeBytes+1<<20),
		grpc.MaxSendMsgSize(storage.MaximumMessageSizeBytes+1<<20))
	server := grpc.NewServer(serverOptions...)
	// Results whose outputs were evicted from the CAS are misses, for
	// Bazel's own GetActionResult calls and for Execute alike.
	actionCache := completenesschecking.NewCompletenessCheckingBlobAccess(
		storage.ActionCache, storage.ContentAddressableStorage, 1000, storage.MaximumMessageSizeBytes, 64<<20)
	liveLogs := livelogs.NewRegistry()
	executionServer := execution.NewServer(execution.Options{
		Executor:                executor,
		ActionCache:             actionCache,
		MaximumMessageSizeBytes: storage.MaximumMessageSizeBytes,
		Concurrency:             f.concurrency,
		CompletedRetention:      10 * time.Minute,
		MaximumCompleted:        1000,
		Recorder:                recorder,
		LiveLogs:                liveLogs,
	})
	statusPage := statuspage.NewHandler(statuspage.Options{
		Recorder:                  recorder,
		ContentAddressableStorage: storage.ContentAddressableStorage,
		MaximumMessageSizeBytes:   storage.MaximumMessageSizeBytes,
		Gatherer:                  statusPageGatherer,
		Slots:                     f.concurrency,
		QueueLength:               executionServer.QueueLength,
		DataDirectory:             f.dataDir,
		DiskBudgetBytes:           f.casSize + f.acSize + f.fileCacheSize + f.layerCacheSize,
		WorkerName:                f.workerName,
	})
	remoteexecution.RegisterExecutionServer(server, executionServer)
	// bb-storage's CAS server leaves GetTree Unimplemented;
	// remotetool's directory operations need it.
	casAccess := access.contentAddressableStorage(storage.ContentAddressableStorage)
	remoteexecution.RegisterContentAddressableStorageServer(server, gettree.NewServer(
		grpcservers.NewContentAddressableStorageServer(casAccess, int64(storage.MaximumMessageSizeBytes)),
		casAccess, storage.MaximumMessageSizeBytes))
	remoteexecution.RegisterActionCacheServer(server,
		grpcservers.NewActionCacheServer(access.actionCache(actionCache), storage.MaximumMessageSizeBytes))
	// The pinned genproto takes a *grpc.Server here, not a registrar.
	// Reads of running actions' live logs are served from their log
	// files; everything else is bb-storage's.
	bytestream.RegisterByteStreamServer(server, livelogs.NewByteStreamServer(
		grpcservers.NewByteStreamServer(casAccess, 1<<16, bb_zstd.NewUnboundedPool(nil, nil)), liveLogs))
	remoteexecution.RegisterCapabilitiesServer(server,
		capabilities.NewServer(access.capabilities(worker.NewCapabilitiesProvider(int64(storage.MaximumMessageSizeBytes)))))
	healthServer := health.NewServer()
	healthpb.RegisterHealthServer(server, healthServer)
	return &serveFrontEnd{server: server, execution: executionServer, health: healthServer, statusPage: statusPage}
}

// run serves on listener until ctx ends or a signal comes, then drains:
// new RPCs are refused, running actions get the grace period (or
// until a second signal), and what is left is cancelled; the sandbox
// runner leaves no mounts or processes behind either way.
func (fe *serveFrontEnd) run(ctx context.Context, listener net.Listener, signals <-chan os.Signal, grace time.Duration, logger *log.Logger, ready func(statusPage http.Handler)) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- fe.server.Serve(listener) }()
	ready(fe.statusPage)
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
		// A routine of the global configuration (the diagnostics
		// HTTP server) failed; program.RunLocal reports why.
		logger.Printf("stopping: %v", context.Cause(ctx))
		fe.execution.Shutdown()
		fe.server.Stop()
		return nil
	case sig := <-signals:
		logger.Printf("%v: draining (new RPCs are refused; running actions get %v)", sig, grace)
	}
	fe.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		fe.server.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(grace):
		logger.Printf("grace period over: cancelling the actions still running")
	case sig := <-signals:
		logger.Printf("%v again: cancelling the actions still running", sig)
	}
	fe.execution.Shutdown()
	fe.server.Stop()
	logger.Printf("stopped")
	return nil
}

func serveMetrics(listener net.Listener, logger *log.Logger, statusPage http.Handler) {
	mux := http.NewServeMux()
	addStatusPage(mux, statusPage)
	mux.Handle("/metrics", promhttp.Handler())
	healthy := func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }
	mux.HandleFunc("/-/healthy", healthy)
	mux.HandleFunc("/healthz", healthy)
	if err := http.Serve(listener, mux); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Printf("metrics server: %v", err)
	}
}
