package main

import (
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
	"github.com/bitzel/bitzel-worker/cas"
	"github.com/bitzel/bitzel-worker/sandbox"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/completenesschecking"
	"github.com/buildbarn/bb-storage/pkg/blobstore/grpcservers"
	"github.com/buildbarn/bb-storage/pkg/capabilities"
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
	listen, metricsListen   string
	dataDir                 string
	casSize, acSize         int64
	fileCacheSize           int64
	fileCacheFiles          int
	layerCacheSize          int64
	layerCacheInodes        int64
	concurrency             int
	tlsCert, tlsKey         string
	defaultTimeout, maxTime time.Duration
	outputLimit             int64
	memoryLimit, pidsLimit  int64
	tmpSize                 int64
	execRootPath            string
	hermetic                bool
	workerName              string
	cgroups                 string
	warmSandboxes           int
	shutdownGrace           time.Duration
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	hostname, _ := os.Hostname()
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8980", "gRPC `address` of the REAPI services")
	fs.StringVar(&f.metricsListen, "metrics-listen", "127.0.0.1:9980", "HTTP `address` for /metrics and /-/healthy (empty: off)")
	fs.StringVar(&f.dataDir, "data-dir", defaultDataDir(), "`directory` for the CAS, the caches and running actions")
	fs.Int64Var(&f.casSize, "cas-size", 8<<30, "CAS size in `bytes` (a sparse file)")
	fs.Int64Var(&f.acSize, "ac-size", 64<<20, "Action Cache size in `bytes`")
	fs.Int64Var(&f.fileCacheSize, "file-cache-size", 16<<30, "file cache budget in `bytes`")
	fs.IntVar(&f.fileCacheFiles, "file-cache-files", 1_000_000, "file cache budget in `files`")
	fs.Int64Var(&f.layerCacheSize, "layer-cache-size", 32<<30, "layer cache budget in `bytes`")
	fs.Int64Var(&f.layerCacheInodes, "layer-cache-inodes", 4_000_000, "layer cache budget in `inodes`")
	fs.IntVar(&f.concurrency, "concurrency", runtime.NumCPU(), "actions run at once")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate `file` (with -tls-key; default: plaintext)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "TLS private key `file`")
	fs.DurationVar(&f.defaultTimeout, "default-timeout", 15*time.Minute, "timeout of actions that set none")
	fs.DurationVar(&f.maxTime, "max-timeout", 24*time.Hour, "largest timeout an action may ask for")
	fs.Int64Var(&f.outputLimit, "output-limit", 64<<20, "cap on each of stdout and stderr, in `bytes`")
	fs.Int64Var(&f.memoryLimit, "memory-limit", 0, "memory limit per action in `bytes` (needs cgroups; 0: none)")
	fs.Int64Var(&f.pidsLimit, "pids-limit", 4096, "process limit per action")
	fs.Int64Var(&f.tmpSize, "tmp-size", 4<<30, "size of each action's private /tmp in `bytes`")
	fs.StringVar(&f.execRootPath, "exec-root-path", sandbox.DefaultExecRootPath, "where the exec root appears inside the sandbox")
	fs.BoolVar(&f.hermetic, "hermetic", false, "use the input root as the whole root file system (no host userland)")
	fs.StringVar(&f.workerName, "worker-name", hostname, "name reported in ExecutedActionMetadata")
	fs.StringVar(&f.cgroups, "cgroups", "auto", "cgroup hierarchy for limits: auto, v1, v2 or none")
	fs.IntVar(&f.warmSandboxes, "warm-sandboxes", runtime.NumCPU(), "sandboxes kept started ahead of need")
	fs.DurationVar(&f.shutdownGrace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long running actions may finish before they are cancelled (a second signal cancels them at once)")
}

func serveCommand(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: bitzel-worker serve [flags]

Serves the Remote Execution API (Capabilities, CAS, ActionCache,
ByteStream, Execution) on one port, storing blobs on local disk and
running actions in sandboxes on this machine. No flag is required.

`)
		fs.PrintDefaults()
	}
	var f serveFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := serve(&f); err != nil {
		log.Printf("serve: %v", err)
		return 1
	}
	return 0
}

func serve(f *serveFlags) error {
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	if err := os.MkdirAll(f.dataDir, 0o711); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}

	// Storage: a persistent local CAS and AC.
	storage, err := cas.NewLocalStorage(filepath.Join(f.dataDir, "storage"), f.casSize, f.acSize)
	if err != nil {
		return err
	}
	defer storage.Close()
	// The empty blob is always present (REAPI): actions with empty
	// stdout or stderr refer to it, and without it the completeness
	// check would turn every such Action Cache entry into a miss.
	storage.ContentAddressableStorage = blobstore.NewEmptyBlobInjectingBlobAccess(storage.ContentAddressableStorage)

	// Sandbox: namespaces and limits.
	runner, owner, cgroupNote, err := newRunner(f)
	if err != nil {
		return err
	}
	defer runner.Close()
	logger.Printf("sandbox: %v; %s", runner, cgroupNote)

	// Executor: caches, materialisation, outputs, and the decorator
	// stack every action goes through.
	executor, closeCaches, err := newExecutor(f, storage, runner, owner, logger)
	if err != nil {
		return err
	}
	defer closeCaches()

	// gRPC services.
	var serverOptions []grpc.ServerOption
	if f.tlsCert != "" || f.tlsKey != "" {
		creds, err := credentials.NewServerTLSFromFile(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		serverOptions = append(serverOptions, grpc.Creds(creds))
	}
	serverOptions = append(serverOptions,
		grpc.MaxRecvMsgSize(storage.MaximumMessageSizeBytes+1<<20),
		grpc.MaxSendMsgSize(storage.MaximumMessageSizeBytes+1<<20))
	server := grpc.NewServer(serverOptions...)
	// Results whose outputs were evicted from the CAS are misses, for
	// Bazel's own GetActionResult calls and for Execute alike.
	actionCache := completenesschecking.NewCompletenessCheckingBlobAccess(
		storage.ActionCache, storage.ContentAddressableStorage, 1000, storage.MaximumMessageSizeBytes, 64<<20)
	execution := worker.NewExecutionServer(worker.ExecutionServerOptions{
		Executor:                executor,
		ActionCache:             actionCache,
		MaximumMessageSizeBytes: storage.MaximumMessageSizeBytes,
		Concurrency:             f.concurrency,
		CompletedRetention:      10 * time.Minute,
	})
	remoteexecution.RegisterExecutionServer(server, execution)
	remoteexecution.RegisterContentAddressableStorageServer(server,
		grpcservers.NewContentAddressableStorageServer(storage.ContentAddressableStorage, int64(storage.MaximumMessageSizeBytes)))
	remoteexecution.RegisterActionCacheServer(server,
		grpcservers.NewActionCacheServer(actionCache, storage.MaximumMessageSizeBytes))
	// The pinned genproto takes a *grpc.Server here, not a registrar.
	bytestream.RegisterByteStreamServer(server,
		grpcservers.NewByteStreamServer(storage.ContentAddressableStorage, 1<<16, bb_zstd.NewUnboundedPool(nil, nil)))
	remoteexecution.RegisterCapabilitiesServer(server,
		capabilities.NewServer(worker.NewCapabilitiesProvider(int64(storage.MaximumMessageSizeBytes))))
	healthServer := health.NewServer()
	healthpb.RegisterHealthServer(server, healthServer)

	listener, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	if f.metricsListen != "" {
		metricsListener, err := net.Listen("tcp", f.metricsListen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", f.metricsListen, err)
		}
		logger.Printf("metrics on %s (/metrics, /-/healthy)", metricsListener.Addr())
		go serveMetrics(metricsListener, logger)
	}
	logger.Printf("serving REAPI on %s (data in %s, %d actions at once)", listener.Addr(), f.dataDir, f.concurrency)

	serveErr := make(chan error, 1)
	go func() { serveErr <- server.Serve(listener) }()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-serveErr:
		return err
	case sig := <-signals:
		logger.Printf("%v: draining (new RPCs are refused; running actions get %v)", sig, f.shutdownGrace)
	}
	// Graceful shutdown: refuse new RPCs, let running actions finish
	// within the grace period, then cancel what is left; the sandbox
	// runner leaves no mounts or processes behind either way.
	healthServer.Shutdown()
	stopped := make(chan struct{})
	go func() {
		server.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(f.shutdownGrace):
		logger.Printf("grace period over: cancelling the actions still running")
	case sig := <-signals:
		logger.Printf("%v again: cancelling the actions still running", sig)
	}
	execution.Shutdown()
	server.Stop()
	logger.Printf("stopped")
	return nil
}

// newRunner also returns who cached inputs must belong to: the host
// uid of the actions' root.
func newRunner(f *serveFlags) (sandbox.Runner, *cas.Owner, string, error) {
	config := sandbox.Config{
		StateDir:       filepath.Join(f.dataDir, "sandbox"),
		ExecRootPath:   f.execRootPath,
		ExecRootIsRoot: f.hermetic,
		WarmSandboxes:  f.warmSandboxes,
	}
	note := "cgroup limits enforced"
	manager, err := sandbox.DetectCgroups(sandbox.CgroupMode(f.cgroups), "bitzel-worker")
	if err != nil {
		note = fmt.Sprintf("no cgroups (%v): memory limits are not enforced, processes are limited with RLIMIT_NPROC", err)
	} else {
		config.Cgroups = manager
		note = manager.String()
	}
	runner, err := sandbox.NewNamespaceRunner(config)
	if err != nil {
		if manager != nil {
			manager.Close()
		}
		return nil, nil, "", err
	}
	uid, gid := config.ActionRootIDs()
	return runner, &cas.Owner{UID: uid, GID: gid}, note, nil
}

func newExecutor(f *serveFlags, storage *cas.Storage, runner sandbox.Runner, owner *cas.Owner, logger *log.Logger) (worker.Executor, func(), error) {
	files, err := cas.NewFileCache(filepath.Join(f.dataDir, "files"), f.fileCacheSize, f.fileCacheFiles, owner)
	if err != nil {
		return nil, nil, err
	}
	layers, err := cas.NewLayerCache(filepath.Join(f.dataDir, "layers"), f.layerCacheSize, f.layerCacheInodes)
	if err != nil {
		files.Close()
		return nil, nil, err
	}
	// Closing marks the caches clean, so a restart keeps them.
	closeCaches := func() {
		layers.Close()
		files.Close()
	}
	var executor worker.Executor
	executor, err = worker.NewLocalExecutor(worker.LocalExecutorOptions{
		Storage:      storage,
		Materializer: cas.NewMaterializer(storage, files, layers, cas.MaterializerOptions{Owner: owner}),
		Outputs: cas.NewOutputCapturer(storage, cas.OutputCapturerOptions{
			SymlinkAbsolutePathStrategy: remoteexecution.SymlinkAbsolutePathStrategy_DISALLOWED,
		}),
		Runner:           runner,
		BuildDirectory:   filepath.Join(f.dataDir, "build"),
		WorkerName:       f.workerName,
		DefaultTimeout:   f.defaultTimeout,
		MaximumTimeout:   f.maxTime,
		OutputLimitBytes: f.outputLimit,
		Limits: sandbox.Limits{
			MemoryBytes:  f.memoryLimit,
			MaxProcesses: f.pidsLimit,
			TmpSizeBytes: f.tmpSize,
		},
	})
	if err != nil {
		closeCaches()
		return nil, nil, err
	}
	executor = worker.NewCachingExecutor(executor, storage)
	executor = worker.NewMetricsExecutor(executor)
	executor = worker.NewLoggingExecutor(executor, logger)
	return executor, closeCaches, nil
}

func serveMetrics(listener net.Listener, logger *log.Logger) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	healthy := func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }
	mux.HandleFunc("/-/healthy", healthy)
	mux.HandleFunc("/healthz", healthy)
	if err := http.Serve(listener, mux); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Printf("metrics server: %v", err)
	}
}
