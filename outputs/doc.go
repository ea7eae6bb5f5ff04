// Package outputs turns what an action left in its exec root into the
// output fields of an ActionResult and uploads what the CAS lacks.
//
// Outputs (OutputCapturer) are read from the merged view of each
// mount, computed logically from the upperdirs over the input root's
// Directory trees (layers.InputRoot.LayerDirectories) with overlayfs
// "userxattr" semantics. Files the action did not touch keep their
// input digests and are neither read nor uploaded. Files it wrote are
// hashed within an output budget (bytes, entries, the storage's
// largest blob) checked from lstat before any byte is read, then
// uploaded after one FindMissing: small ones in batches, large ones
// streamed from their files. MkdirAll creates the parents of outputs
// in the upperdirs before the action runs, as only the merged view
// knows which already exist.
//
// It imports layers and storage (and internal packages); nothing
// imports it but the worker.
package outputs
