package layers

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

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
