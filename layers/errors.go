package cas

import (
	"fmt"
	"sort"
	"strings"

	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// missingBlobsError returns the FAILED_PRECONDITION that REAPI
// prescribes for inputs absent from the CAS, with one MISSING
// violation per digest, so that a client can upload all of them
// before retrying instead of discovering them one at a time.
func missingBlobsError(missing []digest.Digest) error {
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

// invalidInputError reports a malformed input tree, naming the path
// relative to the input root so a user can find the culprit.
func invalidInputError(p, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "input root: %s: %s", quotePath(p), fmt.Sprintf(format, args...))
}

// maxQuotedPath bounds how much of a client's path an error repeats:
// enough to find it, not a name of megabytes echoed back.
const maxQuotedPath = 512

// quotePath quotes p, shortened in the middle when it is long.
func quotePath(p string) string {
	if len(p) <= maxQuotedPath {
		return fmt.Sprintf("%q", p)
	}
	head, tail := p[:maxQuotedPath/2], p[len(p)-maxQuotedPath/4:]
	return fmt.Sprintf("%q...%q (%d bytes)", strings.ToValidUTF8(head, ""), strings.ToValidUTF8(tail, ""), len(p))
}

// joinPath joins a relative directory path and a name.
func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}
