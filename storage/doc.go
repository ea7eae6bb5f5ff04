// Package storage is the worker's Content Addressable Storage and
// Action Cache: bb-storage BlobAccess objects, local or remote, and
// the few things the worker needs on top of them.
//
// Storage wraps a persistent local block-device store (NewLocalStorage)
// or gRPC clients of a remote CAS and AC (NewGRPCStorage), which
// additionally batch small blobs with BatchReadBlobs/BatchUpdateBlobs
// (ReadSmallBlobs, WriteSmallBlobs, FetchBlobs). Every blob read is
// checked against its digest by bb-storage buffers before it is used.
// The bytes read and written are counted here (bitzel_cas_*_bytes_total).
//
// It owns two error conventions of the worker's package boundaries:
// MissingBlobsError, REAPI's FAILED_PRECONDITION listing every missing
// blob, and out-of-space: a full disk or an exhausted quota is a
// RESOURCE_EXHAUSTED status marked where the errno is seen
// (WrapFileSystemError) and recognised with IsOutOfSpace, so that
// callers test codes and marks, not message text.
//
// It imports bb-storage, the REAPI and internal/parallel; nothing of
// the worker's own above it (layers, outputs, worker).
package storage
