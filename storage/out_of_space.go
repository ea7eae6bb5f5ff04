package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A full disk or an exhausted quota is the worker's condition, not the
// action's: the executor reports it as RESOURCE_EXHAUSTED so that a
// client retries elsewhere. Between the syscall and the executor the
// error crosses the caches, the layers and bb-storage, which keep a
// status's code and details but not an errno. So out-of-space is made
// a status where ENOSPC or EDQUOT is seen (WrapFileSystemError), marked
// with an ErrorInfo detail that every util.StatusWrap on the way
// keeps, and IsOutOfSpace tests that detail instead of message text.

// Domain and reason of the ErrorInfo detail that marks out-of-space.
const (
	outOfSpaceDomain = "bitzel-worker"
	outOfSpaceReason = "OUT_OF_SPACE"
)

// isOutOfSpaceErrno reports whether err's chain holds ENOSPC or EDQUOT.
func isOutOfSpaceErrno(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// OutOfSpaceError is RESOURCE_EXHAUSTED marked as out of space, with
// msg before err's message.
func OutOfSpaceError(err error, msg string) error {
	st, detailErr := status.New(codes.ResourceExhausted, fmt.Sprintf("%s: %s", msg, status.Convert(err).Message())).
		WithDetails(&errdetails.ErrorInfo{Domain: outOfSpaceDomain, Reason: outOfSpaceReason})
	if detailErr != nil {
		return status.Errorf(codes.Internal, "Failed to attach out-of-space detail: %s", detailErr)
	}
	return st.Err()
}

// WrapFileSystemError is util.StatusWrapf for the error of a file
// system call, except that a full disk or an exhausted quota becomes
// an OutOfSpaceError. A status keeps its code; anything else becomes
// UNKNOWN, as util.StatusWrapf does.
func WrapFileSystemError(err error, format string, args ...any) error {
	if isOutOfSpaceErrno(err) {
		return OutOfSpaceError(err, fmt.Sprintf(format, args...))
	}
	return util.StatusWrapf(err, format, args...)
}

// WrapFileSystemErrorWithCode is util.StatusWrapfWithCode for the
// error of a file system call, except that a full disk or an exhausted
// quota becomes an OutOfSpaceError instead of getting code.
func WrapFileSystemErrorWithCode(err error, code codes.Code, format string, args ...any) error {
	if isOutOfSpaceErrno(err) {
		return OutOfSpaceError(err, fmt.Sprintf(format, args...))
	}
	return util.StatusWrapfWithCode(err, code, format, args...)
}

// IsOutOfSpace recognises a full disk or an exhausted quota: an error
// marked by OutOfSpaceError (through any wrapping that keeps status
// details) or one still holding the errno.
//
// One kind of error is recognised by its text: an UNKNOWN status
// naming the errno, which is what an errno becomes when code outside
// this repository (bb-storage's local store, say) turns it into a
// status. No client-controlled text can make it match, since input
// errors are INVALID_ARGUMENT or FAILED_PRECONDITION.
func IsOutOfSpace(err error) bool {
	if err == nil {
		return false
	}
	if isOutOfSpaceErrno(err) {
		return true
	}
	st := status.Convert(err)
	for _, detail := range st.Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok && info.Domain == outOfSpaceDomain && info.Reason == outOfSpaceReason {
			return true
		}
	}
	return st.Code() == codes.Unknown && messageNamesOutOfSpaceErrno(st.Message())
}

func messageNamesOutOfSpaceErrno(message string) bool {
	return strings.Contains(message, syscall.ENOSPC.Error()) || strings.Contains(message, syscall.EDQUOT.Error())
}

type outOfSpaceReportingBlobAccess struct {
	blobstore.BlobAccess
}

// newOutOfSpaceReportingBlobAccess reports a write that failed for a
// full disk (or quota) as an OutOfSpaceError: bb-storage's local store
// passes the errno on as UNKNOWN, which tells a client nothing it can
// act on.
func newOutOfSpaceReportingBlobAccess(base blobstore.BlobAccess) blobstore.BlobAccess {
	return &outOfSpaceReportingBlobAccess{BlobAccess: base}
}

func (ba *outOfSpaceReportingBlobAccess) Put(ctx context.Context, d digest.Digest, b buffer.Buffer) error {
	err := ba.BlobAccess.Put(ctx, d, b)
	// Whatever code bb-storage gave it: its message names only the
	// store's own files, never a client's text.
	if err != nil && (IsOutOfSpace(err) || messageNamesOutOfSpaceErrno(status.Convert(err).Message())) {
		return OutOfSpaceError(err, "The storage is out of disk space")
	}
	return err
}
