package worker

import (
	"context"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// requestMetadataKey is the gRPC metadata entry REAPI clients (Bazel)
// attach to every call; "-bin" entries arrive base64-decoded.
const requestMetadataKey = "build.bazel.remote.execution.v2.requestmetadata-bin"

// RequestMetadataFromContext returns the RequestMetadata the client
// sent with the call, or nil. It only labels the action for people
// (tool invocation, target, mnemonic), so a malformed one is ignored
// rather than failing the call.
func RequestMetadataFromContext(ctx context.Context) *remoteexecution.RequestMetadata {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return nil
	}
	values := md.Get(requestMetadataKey)
	if len(values) == 0 {
		return nil
	}
	var m remoteexecution.RequestMetadata
	if err := proto.Unmarshal([]byte(values[0]), &m); err != nil {
		return nil
	}
	return &m
}

// ClientRequestMetadata returns the client's RequestMetadata: the one
// the embedded Execution service took from the call, else one that a
// Buildbarn scheduler forwarded among the auxiliary metadata.
func (r *Request) ClientRequestMetadata() *remoteexecution.RequestMetadata {
	if r.RequestMetadata != nil {
		return r.RequestMetadata
	}
	for _, a := range r.AuxiliaryMetadata {
		var m remoteexecution.RequestMetadata
		if a.MessageIs(&m) && a.UnmarshalTo(&m) == nil {
			return &m
		}
	}
	return nil
}
