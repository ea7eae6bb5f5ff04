package outputs

import (
	"context"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// outputBudget bounds what one Capture may cost the worker: the bytes
// it must hash and upload (files the action wrote; untouched inputs
// keep their digests and cost nothing), the entries its results list,
// and the size of any single blob the storage can hold. Sizes come
// from lstat before any byte is read, so a sparse file of 200 GiB is
// refused at once instead of being hashed for minutes.
type outputBudget struct {
	maximumBytes    int64 // 0: unlimited
	maximumEntries  int64 // 0: unlimited
	maximumBlobSize int64 // 0: unknown
	bytes, entries  int64
}

// addEntry accounts one output entry (file, directory or symlink).
func (b *outputBudget) addEntry(p string) error {
	b.entries++
	if b.maximumEntries > 0 && b.entries > b.maximumEntries {
		return status.Errorf(codes.ResourceExhausted, "Outputs exceed the worker's limit of %d files, directories and symlinks per action (at %s)", b.maximumEntries, shortPath(p))
	}
	return nil
}

// addBytes accounts an output file of size bytes that must be hashed
// and uploaded.
func (b *outputBudget) addBytes(p string, size int64) error {
	if b.maximumBlobSize > 0 && size > b.maximumBlobSize {
		return status.Errorf(codes.ResourceExhausted, "Output file %s is %d bytes; the storage holds blobs of at most %d bytes", shortPath(p), size, b.maximumBlobSize)
	}
	b.bytes += size
	if b.maximumBytes > 0 && b.bytes > b.maximumBytes {
		return status.Errorf(codes.ResourceExhausted, "Output file %s (%d bytes) takes the action's outputs to %d bytes, beyond the worker's limit of %d bytes per action", shortPath(p), size, b.bytes, b.maximumBytes)
	}
	return nil
}

// shortPath quotes a path for a message, cut in the middle when long:
// a path deeper than PATH_MAX would otherwise make a 27 KB message.
func shortPath(p string) string {
	const keep = 120
	if len(p) <= 2*keep {
		return fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("%q (%d bytes)", p[:keep]+"..."+p[len(p)-keep:], len(p))
}

// contextReader stops a copy once ctx ends: hashing a large output
// must not outlive the action's deadline or the client's interest.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (r contextReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// hashInterrupted describes a hash stopped by ctx, naming the file.
func hashInterrupted(ctx context.Context, p string, size int64) error {
	if ctx.Err() == context.Canceled {
		return status.Errorf(codes.Canceled, "Hashing output %s (%d bytes) stopped: the request was cancelled", shortPath(p), size)
	}
	// Not DEADLINE_EXCEEDED: callers retrying storage errors would
	// take that for a storage that did not answer in time.
	return status.Errorf(codes.ResourceExhausted, "Output %s (%d bytes) could not be hashed within the action's deadline", shortPath(p), size)
}

// joinPath joins a relative directory path and a name.
func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}
