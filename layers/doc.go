// Package cas turns REAPI input root digests into read-only layer
// directories and sends action outputs back to the CAS.
//
// Storage wraps bb-storage BlobAccess objects: a persistent local
// block-device store (NewLocalStorage) or gRPC clients of a remote CAS
// and AC (NewGRPCStorage), which additionally batch small blobs with
// BatchReadBlobs/BatchUpdateBlobs. Every blob read is checked against
// its digest by bb-storage buffers before it is used.
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
//     property) whose lowerdirs are layers, each keyed by the digest of
//     the Directory it materialises.
//  3. Layers absent from the LayerCache are built from the FileCache:
//     one read-only inode per (digest, executable), hardlinked into
//     layers; EMLINK falls back to a fresh inode. Layers are built once
//     under concurrency, published by an atomic rename, leased while
//     used and evicted LRU only when unleased.
//
// An input root seen before whose layers are cached is placed in O(1)
// of its size: the plan is cached and only leases are taken.
//
// Outputs (OutputCapturer) are read from the merged view of each
// mount, computed logically from the upperdirs over the known input
// Directory trees with overlayfs "userxattr" semantics. Files the
// action did not touch keep their input digests and are not uploaded.
//
// Crash safety: both caches write through temporary directories and
// renames, discard leftovers at start-up, and record the boot under
// which they were written, wiping themselves when found after a reboot
// without a clean Close (their files are not fsynced one by one).
package layers
