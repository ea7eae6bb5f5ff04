// bb_scheduler for the sample cluster (see cluster.libsonnet): queues
// the actions bb_storage forwards and hands them to the bitzel-workers
// that synchronize with it. Schema:
// buildbarn.configuration.bb_scheduler.ApplicationConfiguration in
// bb-remote-execution's pkg/proto/configuration/bb_scheduler/bb_scheduler.proto.
//
//   bb_scheduler configs/bb_scheduler.jsonnet
//
// Admin page (queues, workers, operations, drains):
// http://127.0.0.1:7982/
local cluster = import 'cluster.libsonnet';

{
  // Execute/WaitExecution from the frontend (bb_storage).
  clientGrpcServers: [{
    listenAddresses: [cluster.schedulerClientListenAddress],
    authenticationPolicy: { allow: {} },
  }],
  // Synchronize from the workers (configs/worker.jsonnet 'scheduler').
  workerGrpcServers: [{
    listenAddresses: [cluster.schedulerWorkerListenAddress],
    authenticationPolicy: { allow: {} },
  }],
  adminHttpServers: [{
    listenAddresses: [cluster.schedulerAdminListenAddress],
    authenticationPolicy: { allow: {} },
  }],

  // The scheduler reads Actions (and Commands) from the CAS to learn
  // their platform and timeout.
  contentAddressableStorage: {
    grpc: { client: { address: cluster.storageAddress } },
  },
  maximumMessageSizeBytes: 16 * 1024 * 1024,

  executeAuthorizer: { allow: {} },
  modifyDrainsAuthorizer: { allow: {} },
  killOperationsAuthorizer: { allow: {} },
  synchronizeAuthorizer: { allow: {} },

  actionRouter: {
    simple: {
      // The platform queue of an action is its Action.platform.
      // Workers register under theirs (worker.jsonnet 'platform'):
      // actions are only given to workers whose platform equals
      // theirs, property for property.
      platformKeyExtractor: { action: {} },
      invocationKeyExtractors: [
        { correlatedInvocationsId: {} },
        { toolInvocationId: {} },
      ],
      // Timeouts: the scheduler sets one on every action, so the
      // worker's own default (executor.defaultExecutionTimeout)
      // only matters for other front ends.
      initialSizeClassAnalyzer: {
        defaultExecutionTimeout: '1800s',
        maximumExecutionTimeout: '7200s',
      },
    },
  },
  // Queued actions of a platform that no worker serves fail after this.
  platformQueueWithNoWorkersTimeout: '900s',

  global: {
    diagnosticsHttpServer: {
      httpServers: [{
        listenAddresses: [cluster.diagnosticsListenAddress(9982)],
        authenticationPolicy: { allow: {} },
      }],
      enablePrometheus: true,
    },
  },
}
