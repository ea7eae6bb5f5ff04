// Package configuration holds the Go bindings of bitzel-worker's
// configuration messages (configuration.proto): WorkerConfiguration for
// `bitzel-worker worker` and ServeConfiguration for `bitzel-worker
// serve --config`. They embed bb-storage's own configuration messages
// (global, blobstore, grpc), so that settings shared with Buildbarn's
// binaries are written exactly as for those.
//
// To regenerate after editing configuration.proto, with protoc
// installed (Debian: apt-get install protobuf-compiler):
//
//	cd proto/configuration && go generate
//
// internal/protogen (shared by every .proto of the module) installs
// the plugins at the versions matching go.mod into a temporary
// directory and supplies the imported files as compiled descriptors;
// see its package comment. Commit the resulting configuration.pb.go.
package configuration

//go:generate go run ../../internal/protogen -proto proto/configuration/configuration.proto
