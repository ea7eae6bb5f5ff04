// `bitzel-worker serve --config configs/serve.jsonnet`: the embedded
// REAPI server (Capabilities, CAS, AC, ByteStream, Execution) and
// executor on one machine, configured from a file rather than flags.
// Flags given as well override the file. Schema: bitzel.configuration.
// ServeConfiguration in proto/configuration/configuration.proto. Every
// field may be left out; the values below are the defaults of
// `bitzel-worker serve` without flags, except where noted.
{
  listenAddress: '127.0.0.1:8980',
  // tlsCertificatePath: '/etc/bitzel-worker/tls.crt',
  // tlsPrivateKeyPath: '/etc/bitzel-worker/tls.key',

  // The local CAS (a sparse file) and Action Cache.
  contentAddressableStorageSizeBytes: 8 * 1024 * 1024 * 1024,
  actionCacheSizeBytes: 64 * 1024 * 1024,

  // Default: the number of CPUs.
  // concurrency: 8,
  // Default: the host name.
  // workerName: 'builder1',

  // On SIGTERM, running actions get this long to finish.
  shutdownGracePeriod: '30s',

  executor: {
    // Default: /var/lib/bitzel-worker as root, ~/.cache/bitzel-worker
    // otherwise; a relative path is taken under that directory.
    // dataDirectoryPath: '/srv/bitzel-worker',
    fileCacheSizeBytes: 16 * 1024 * 1024 * 1024,
    fileCacheMaximumFiles: 1000000,
    layerCacheSizeBytes: 32 * 1024 * 1024 * 1024,
    layerCacheMaximumInodes: 4000000,
    defaultExecutionTimeout: '900s',
    maximumExecutionTimeout: '86400s',
    maximumOutputSizeBytes: 64 * 1024 * 1024,
    // Per-action output budget (bytes hashed and uploaded; entries).
    maximumOutputBytesPerAction: 16 * 1024 * 1024 * 1024,
    maximumOutputEntriesPerAction: 1000000,
    sandbox: {
      execRootPath: '/bitzel/execroot',
      hermetic: false,
      cgroups: 'AUTO',
      // memoryLimitBytes: 4 * 1024 * 1024 * 1024,
      maximumProcesses: 4096,
      tmpSizeBytes: 4 * 1024 * 1024 * 1024,
      // What an action may write to its exec root (a tmpfs of this size).
      diskBudgetBytes: 4 * 1024 * 1024 * 1024,
      // Default: the number of CPUs.
      // warmSandboxes: 4,
    },
  },

  // Buildbarn's global settings. The diagnostics server replaces
  // --metrics-listen (same address as its default here): /metrics and
  // /-/healthy, plus /debug/pprof/.
  global: {
    diagnosticsHttpServer: {
      httpServers: [{
        listenAddresses: ['127.0.0.1:9980'],
        authenticationPolicy: { allow: {} },
      }],
      enablePrometheus: true,
      enablePprof: true,
    },
    // logPaths: ['/var/log/bitzel-worker.log'],
  },
}
