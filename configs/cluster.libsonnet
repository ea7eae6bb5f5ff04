// Where the parts of the sample Buildbarn cluster listen and how they
// find each other: here, all of them on the loopback interface of one
// machine. bb_storage.jsonnet, bb_scheduler.jsonnet and worker.jsonnet
// import this file; docker/cluster.libsonnet replaces it inside the
// containers of docker/compose.yaml, where the parts are separate hosts.
//
//   Bazel, bitzel submit ──REAPI──> bb_storage :8980 (frontend, CAS, AC)
//                                      │ Execute, WaitExecution
//                                      v
//                               bb_scheduler :8982 (clients)
//   bitzel-worker ──Synchronize──> bb_scheduler :8983 (workers)
//   bitzel-worker ──CAS, AC──────> bb_storage :8980
{
  // bb_storage: REAPI for clients and workers (Capabilities, CAS, AC,
  // ByteStream, and Execution forwarded to bb_scheduler).
  storageListenAddress: '127.0.0.1:8980',
  storageAddress: '127.0.0.1:8980',

  // bb_scheduler: the endpoint bb_storage forwards Execute to, and the
  // one workers synchronize with.
  schedulerClientListenAddress: '127.0.0.1:8982',
  schedulerClientAddress: '127.0.0.1:8982',
  schedulerWorkerListenAddress: '127.0.0.1:8983',
  schedulerWorkerAddress: '127.0.0.1:8983',

  // bb_scheduler's web page listing queues, workers and operations.
  schedulerAdminListenAddress: '127.0.0.1:7982',

  // Diagnostics HTTP servers (/metrics, /-/healthy): bb_storage on
  // 9980, bb_scheduler on 9982, worker N on 9984+N.
  diagnosticsListenAddress(port):: '127.0.0.1:%d' % port,

  // Worker N's ID labels; unique in the cluster, as the scheduler
  // requires.
  workerId(index):: { host: 'localhost', worker: std.toString(index) },

  // Worker N's data directory. Relative: under the default data
  // directory (/var/lib/bitzel-worker as root, ~/.cache/bitzel-worker
  // otherwise). Never shared by two running workers.
  workerDataDirectory(index):: 'cluster-worker-%d' % index,
}
