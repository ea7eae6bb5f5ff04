// Package layerproperty owns the bitzel.layers Directory node property:
// its name and the encoding of its value. A client declares with it
// that a directory of its input root is a union: the directory's own
// entries on top of the listed Directory trees, topmost first. The
// worker advertises the name in
// ExecutionCapabilities.supported_node_properties, and package layers
// parses it with Parse.
//
// It imports only the REAPI and bb-storage's digest and gRPC status
// packages, so that clients can use it without the worker.
package layerproperty

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Name is the Directory node property by which a client declares a
// union: its value lists Directory digests ("<hash>/<size>",
// space-separated, topmost first) that are stacked below the
// directory's own entries.
const Name = "bitzel.layers"

// Format is the value of the property for the given layers, topmost
// first.
func Format(layers []digest.Digest) string {
	values := make([]string, len(layers))
	for i, l := range layers {
		values[i] = fmt.Sprintf("%s/%d", l.GetHashString(), l.GetSizeBytes())
	}
	return strings.Join(values, " ")
}

// Parse reads the value of the property, with every digest in
// function. A malformed value is INVALID_ARGUMENT naming the property
// and the field at fault.
func Parse(function digest.Function, value string) ([]digest.Digest, error) {
	var layers []digest.Digest
	seen := map[digest.Digest]bool{}
	for _, field := range strings.Fields(value) {
		hash, sizeString, ok := strings.Cut(field, "/")
		size, err := strconv.ParseInt(sizeString, 10, 64)
		if !ok || err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %s is not of the form <hash>/<size>", Name, quoteField(field))
		}
		d, err := function.NewDigest(hash, size)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %s: %s", Name, quoteField(field), status.Convert(err).Message())
		}
		if seen[d] {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %s is listed more than once", Name, quoteField(field))
		}
		seen[d] = true
		layers = append(layers, d)
	}
	return layers, nil
}

// maxQuotedField bounds how much of a client's value an error repeats:
// enough to find it, not a field of megabytes echoed back.
const maxQuotedField = 512

// quoteField quotes a field, shortened in the middle when it is long,
// as package layers quotes paths.
func quoteField(p string) string {
	if len(p) <= maxQuotedField {
		return fmt.Sprintf("%q", p)
	}
	head, tail := p[:maxQuotedField/2], p[len(p)-maxQuotedField/4:]
	return fmt.Sprintf("%q...%q (%d bytes)", strings.ToValidUTF8(head, ""), strings.ToValidUTF8(tail, ""), len(p))
}
