// bitzel-worker in the sample Buildbarn cluster (see cluster.libsonnet),
// in place of bb_worker + bb_runner. Schema: bitzel.configuration.
// WorkerConfiguration in proto/configuration/configuration.proto; the
// global, blobstore and scheduler messages are bb-storage's, written as
// for bb_worker.
//
//   bitzel-worker worker --config configs/worker.jsonnet
//   BITZEL_WORKER_INDEX=1 bitzel-worker worker --config configs/worker.jsonnet
//
// BITZEL_WORKER_INDEX (0 when unset: bitzel-worker defines it) tells
// workers on one machine apart: their worker IDs, data directories and
// diagnostics ports. Run as root or as an
// ordinary user (rootless sandboxes). SIGTERM drains: no more work is
// taken, running actions finish and are reported, then the worker exits.
local cluster = import 'cluster.libsonnet';
local index = std.parseInt(std.extVar('BITZEL_WORKER_INDEX'));

{
  // The cluster's CAS and Action Cache: bb_storage. Only 'grpc'
  // backends are supported (the Action Cache may wrap one in
  // 'completenessChecking', as bb-deployments' common.libsonnet does).
  blobstore: {
    contentAddressableStorage: {
      grpc: { client: { address: cluster.storageAddress } },
    },
    actionCache: {
      grpc: { client: { address: cluster.storageAddress } },
    },
  },
  // Not above what bb_storage accepts.
  maximumMessageSizeBytes: 16 * 1024 * 1024,

  // bb_scheduler's worker endpoint. TLS ('tls'), added metadata and
  // OAuth2 work as for any Buildbarn gRPC client. This connection and
  // the blobstore's use static 16 MiB flow-control windows unless
  // initialWindowSizeBytes or initialConnWindowSizeBytes is set
  // (grpc-go's dynamic windows cost a ping per call).
  scheduler: { address: cluster.schedulerWorkerAddress },

  executor: {
    // Caches, sandbox state, running actions; never shared by two
    // running workers (see cluster.libsonnet).
    dataDirectoryPath: cluster.workerDataDirectory(index),
    fileCacheSizeBytes: 8 * 1024 * 1024 * 1024,
    fileCacheMaximumFiles: 1000000,
    layerCacheSizeBytes: 16 * 1024 * 1024 * 1024,
    layerCacheMaximumInodes: 2000000,
    // bb_scheduler sets a timeout on every action (its
    // initialSizeClassAnalyzer); these bound what it may ask for.
    defaultExecutionTimeout: '1800s',
    maximumExecutionTimeout: '7200s',
    maximumOutputSizeBytes: 64 * 1024 * 1024,
    // Per-action output budget (bytes hashed and uploaded; entries).
    maximumOutputBytesPerAction: 16 * 1024 * 1024 * 1024,
    maximumOutputEntriesPerAction: 1000000,
    sandbox: {
      // Where inputs appear inside the sandbox.
      execRootPath: '/bitzel/execroot',
      // true: the input root is the whole root file system (the
      // action brings its userland as layers); false: the host's
      // /usr, /bin, /lib*, /etc, /opt are bound read-only.
      hermetic: false,
      // As root, action ids 0..65535 are host ids 1000000000.. .
      hostIdBase: 1000000000,
      hostIdCount: 65536,
      // AUTO: a delegated cgroup v2, else (as root) the v1
      // hierarchies; NONE: no memory limit, RLIMIT_NPROC only.
      cgroups: 'AUTO',
      warmSandboxes: 2,
      memoryLimitBytes: 4 * 1024 * 1024 * 1024,
      maximumProcesses: 4096,
      tmpSizeBytes: 4 * 1024 * 1024 * 1024,
      // Each action's own /dev/shm (POSIX shared memory: Python
      // multiprocessing in BitBake); a container's shm_size does not
      // reach it.
      shmSizeBytes: 1024 * 1024 * 1024,
    },
  },

  // bb_worker's runners: slots registering with the scheduler.
  runners: [{
    // Actions run at once; each slot gets a "thread" label.
    concurrency: 2,
    // Serve every instance name.
    instanceNamePrefix: '',
    // Must equal the platform of the actions to run here, property
    // for property (bb_scheduler's platformKeyExtractor 'action'
    // reads Action.platform). Bazel 4 and `bitzel-worker submit`
    // without --platform send none. For example:
    //   properties: [{ name: 'OSFamily', value: 'linux' }],
    platform: { properties: [] },
    sizeClass: 0,
    workerId: cluster.workerId(index),
  }],
  // A runner for actions on a container image (see containerImages
  // below): bb_scheduler routes by exact platform, so it lists the
  // image as the clients name it, and gets a platform queue of its own.
  //   runners: [..., {
  //     concurrency: 2,
  //     platform: { properties: [
  //       { name: 'OSFamily', value: 'linux' },
  //       { name: 'container-image', value: 'docker://example.org/tools:1' },
  //     ] },
  //     workerId: cluster.workerId(index) { image: 'tools' },
  //   }],

  // Container images on this machine, for runners whose platform names
  // them: an OCI image layout directory or a `docker save` archive per
  // docker:// reference. Every container-image of a runner's platform
  // must be here, or the worker does not start. Never pulled.
  //   containerImages: {
  //     'docker://example.org/tools:1': '/srv/images/tools',
  //     'docker://busybox': '/srv/images/busybox.tar',
  //   },

  global: {
    // /metrics (bitzel_cluster_*, bitzel_executor_*, bitzel_cas_*,
    // grpc_client_*) and /-/healthy.
    diagnosticsHttpServer: {
      httpServers: [{
        listenAddresses: [cluster.diagnosticsListenAddress(9984 + index)],
        authenticationPolicy: { allow: {} },
      }],
      enablePrometheus: true,
      enablePprof: true,
    },
  },
}
