package storage

import (
	"fmt"
	"sort"

	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MissingBlobsError returns the FAILED_PRECONDITION that REAPI
// prescribes for blobs absent from the CAS, with one MISSING violation
// per digest, so that a client can upload all of them before retrying
// instead of discovering them one at a time. The input layers and the
// executor (for a missing Action or Command) report the same way.
func MissingBlobsError(missing []digest.Digest) error {
	subjects := map[string]struct{}{}
	for _, d := range missing {
		subjects[fmt.Sprintf("blobs/%s/%d", d.GetHashString(), d.GetSizeBytes())] = struct{}{}
	}
	sorted := make([]string, 0, len(subjects))
	for s := range subjects {
		sorted = append(sorted, s)
	}
	sort.Strings(sorted)
	failure := &errdetails.PreconditionFailure{}
	for _, s := range sorted {
		failure.Violations = append(failure.Violations, &errdetails.PreconditionFailure_Violation{
			Type:    "MISSING",
			Subject: s,
		})
	}
	st, err := status.New(codes.FailedPrecondition, fmt.Sprintf("%d blob(s) missing from the CAS", len(sorted))).WithDetails(failure)
	if err != nil {
		return status.Errorf(codes.Internal, "Failed to attach precondition failure: %s", err)
	}
	return st.Err()
}
