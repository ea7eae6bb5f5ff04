// Package layers turns REAPI input root digests into read-only layer
// directories arranged as overlay mounts (an InputRoot).
//
// Materialisation (Materializer):
//
//  1. The input root's Directory messages are fetched level by level,
//     with bounded parallelism and an in-memory cache by digest, and
//     checked: names, order, collisions, digests, symlink targets
//     (relative, resolved lexically, never above the input root),
//     depth and entry count. Subtree facts are computed once per
//     distinct Directory, so checking costs O(distinct directories).
//     Every missing blob is reported in one FAILED_PRECONDITION.
//  2. The input root is planned into overlay mounts (see
//     planInputRoot for the rule, including the bitzel.layers union
//     property of package layerproperty) whose lowerdirs are layers,
//     each keyed by the digest of the Directory it materialises.
//  3. Layers absent from the LayerCache are built from the FileCache:
//     one read-only inode per (digest, executable), hardlinked into
//     layers; EMLINK falls back to a fresh inode. Layers are built once
//     under concurrency, published by an atomic rename, leased while
//     used and evicted LRU only when unleased.
//
// An input root seen before whose layers are cached is placed in O(1)
// of its size: the plan is cached and only leases are taken.
//
// Crash safety: both caches write through temporary directories and
// renames, discard leftovers at start-up, and record the boot under
// which they were written, wiping themselves when found after a reboot
// without a clean Close (their files are not fsynced one by one).
// Files and layers a previous run left are verified on first use.
//
// Errors are gRPC statuses: bad input is INVALID_ARGUMENT naming the
// path, missing blobs storage.MissingBlobsError, a full disk
// storage.WrapFileSystemError's RESOURCE_EXHAUSTED.
//
// It imports storage, layerproperty and internal packages; never
// outputs or worker. Package outputs reads an InputRoot's layers
// through InputRoot.LayerDirectories.
package layers
