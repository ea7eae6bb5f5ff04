package livelogs

import (
	"context"
	"strings"

	"github.com/buildbarn/bb-storage/pkg/auth"
	"google.golang.org/protobuf/proto"
)

// nameComponent marks a live log's resource name, as "blobs" marks a
// CAS blob's: [{instance_name}/]live-logs/{uuid}/{stdout|stderr}.
const nameComponent = "live-logs"

// Name is the resource name of one stream of one execution; id is
// unique per execution (a UUID), stream "stdout" or "stderr".
func Name(instanceName, id, stream string) string {
	name := nameComponent + "/" + id + "/" + stream
	if instanceName != "" {
		name = instanceName + "/" + name
	}
	return name
}

// isName reports whether a resource name has a live log's form, so
// that a read of one that has ended is told so rather than handed to
// the CAS, which would call the name malformed.
func isName(resourceName string) bool {
	components := strings.Split(resourceName, "/")
	n := len(components)
	return n >= 3 && components[n-3] == nameComponent && (components[n-1] == "stdout" || components[n-1] == "stderr")
}

// ClientIdentity is who a gRPC call's authentication policy says the
// caller is, as a string to compare: the authentication metadata the
// authenticator attached (empty when none is configured).
func ClientIdentity(ctx context.Context) string {
	metadata := auth.AuthenticationMetadataFromContext(ctx).GetFullProto()
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(metadata)
	if err != nil {
		// Unreachable for a message bb-storage built; an identity
		// nobody else has keeps the log private.
		return "\x00unmarshalable"
	}
	return string(data)
}
