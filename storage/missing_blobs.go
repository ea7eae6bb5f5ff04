package cas

import "github.com/buildbarn/bb-storage/pkg/digest"

// MissingBlobsError is the REAPI FAILED_PRECONDITION for blobs absent
// from the CAS, for callers outside this package (the executor reports
// a missing Action or Command the same way as a missing input).
func MissingBlobsError(missing []digest.Digest) error {
	return missingBlobsError(missing)
}
