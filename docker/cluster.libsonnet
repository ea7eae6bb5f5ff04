// The sample cluster's topology inside docker/compose.yaml, mounted in
// place of configs/cluster.libsonnet next to the configs/*.jsonnet that
// import it: each part is its own host on the compose network, and
// listens on every interface of its container.
{
  storageListenAddress: ':8980',
  storageAddress: 'storage:8980',

  schedulerClientListenAddress: ':8982',
  schedulerClientAddress: 'scheduler:8982',
  schedulerWorkerListenAddress: ':8983',
  schedulerWorkerAddress: 'scheduler:8983',

  schedulerAdminListenAddress: ':7982',

  diagnosticsListenAddress(port):: ':%d' % port,

  // Compose sets BITZEL_WORKER_INDEX per worker service.
  workerId(index):: { host: 'worker-%d' % index },

  // One worker per container, on the volume mounted here.
  workerDataDirectory(index):: '/var/lib/bitzel-worker',
}
