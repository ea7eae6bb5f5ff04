// bb_storage for the sample cluster (see cluster.libsonnet): the Content
// Addressable Storage and the Action Cache of the cluster, and its
// frontend: clients send Execute here and bb_storage forwards it to
// bb_scheduler, as in Buildbarn's bb-deployments. Schema:
// buildbarn.configuration.bb_storage.ApplicationConfiguration in
// bb-storage's pkg/proto/configuration/bb_storage/bb_storage.proto.
//
//   bb_storage configs/bb_storage.jsonnet
//
// Blobs are kept in memory, so a restart empties the cache; for a
// persistent store, replace blocksInMemory with blocksOnBlockDevice and
// keyLocationMapInMemory with keyLocationMapOnBlockDevice, plus
// 'persistent' (see blobstore.proto).
local cluster = import 'cluster.libsonnet';

// A local store in memory: blocks rotate old -> current -> new, and the
// oldest are dropped when space runs out.
local inMemory(blockSizeBytes, entries) = {
  'local': {
    keyLocationMapInMemory: { entries: entries },
    keyLocationMapMaximumGetAttempts: 16,
    keyLocationMapMaximumPutAttempts: 64,
    oldBlocks: 8,
    currentBlocks: 24,
    newBlocks: 1,
    blocksInMemory: { blockSizeBytes: blockSizeBytes },
  },
};

{
  // One gRPC server for everyone: Bazel and bitzel submit (REAPI
  // clients) as well as the workers' CAS and AC traffic.
  grpcServers: [{
    listenAddresses: [cluster.storageListenAddress],
    authenticationPolicy: { allow: {} },
  }],

  // Execute and WaitExecution for every instance name ('' is the
  // prefix of all of them) go to bb_scheduler's client endpoint.
  schedulers: {
    '': { endpoint: { address: cluster.schedulerClientAddress } },
  },

  // 33 blocks of 32 MiB: about 1 GiB of blobs at most.
  contentAddressableStorage: {
    backend: inMemory(32 * 1024 * 1024, 1024 * 1024),
    getAuthorizer: { allow: {} },
    putAuthorizer: { allow: {} },
    findMissingAuthorizer: { allow: {} },
  },
  // Results whose outputs the CAS has lost are reported as misses,
  // rather than sending clients after blobs that are gone.
  actionCache: {
    backend: {
      completenessChecking: {
        backend: inMemory(1024 * 1024, 64 * 1024),
        maximumTotalTreeSizeBytes: 64 * 1024 * 1024,
      },
    },
    getAuthorizer: { allow: {} },
    putAuthorizer: { allow: {} },
  },
  executeAuthorizer: { allow: {} },

  // Must be at least what the workers and the scheduler use.
  maximumMessageSizeBytes: 16 * 1024 * 1024,

  global: {
    diagnosticsHttpServer: {
      httpServers: [{
        listenAddresses: [cluster.diagnosticsListenAddress(9980)],
        authenticationPolicy: { allow: {} },
      }],
      enablePrometheus: true,
      enablePprof: true,
    },
  },
}
