// Package remoteworker holds the Go bindings of the Buildbarn worker
// protocol (buildbarn.remoteworker.OperationQueue), generated from our
// own wire-compatible copy of bb-remote-execution's remoteworker.proto.
// bb-remote-execution is not available from the module proxy, so it
// cannot simply be imported.
//
// To regenerate after editing remoteworker.proto, with protoc installed
// (Debian: apt-get install protobuf-compiler):
//
//	cd proto/remoteworker && go generate
//
// internal/protogen (shared by every .proto of the module) installs
// the plugins at the versions matching go.mod into a temporary
// directory and supplies the imported files as compiled descriptors;
// see its package comment. Commit the resulting .pb.go files.
package remoteworker

//go:generate go run ../../internal/protogen -grpc -proto proto/remoteworker/remoteworker.proto
