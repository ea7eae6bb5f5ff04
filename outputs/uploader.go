package outputs

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/bitzel/bitzel-worker/internal/parallel"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

// openForRead opens an output file. A file the action made unreadable
// (mode 0000) is still owned by the worker's uid when running
// rootless, so it is made readable first: the sandbox is gone, and the
// mode to report was recorded before.
func openForRead(p string) (*os.File, error) {
	// O_NOFOLLOW: outputs were classified with lstat; a symlink
	// here would be a swap, and is not followed.
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrPermission) {
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && unix.Chmod(p, (st.Mode&0o7777)|0o400) == nil {
			f, err = os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		}
	}
	return f, err
}

// hashFile computes the digest of a file's content, giving up when ctx
// ends.
func hashFile(ctx context.Context, function digest.Function, p string) (digest.Digest, error) {
	f, err := openForRead(p)
	if err != nil {
		return digest.BadDigest, util.StatusWrapfWithCode(err, codes.Internal, "Failed to open %q", p)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return digest.BadDigest, util.StatusWrapfWithCode(err, codes.Internal, "Failed to stat %q", p)
	}
	g := function.NewGenerator(info.Size())
	if _, err := io.Copy(g, contextReader{ctx: ctx, r: f}); err != nil {
		if ctx.Err() != nil {
			return digest.BadDigest, hashInterrupted(ctx, p, info.Size())
		}
		return digest.BadDigest, util.StatusWrapfWithCode(err, codes.Internal, "Failed to read %q", p)
	}
	return g.Sum(), nil
}

// uploader stores blobs the CAS lacks: it asks FindMissing about all
// of them first, then sends small ones in batches and streams large
// ones from their files.
type uploader struct {
	storage     *storage.Storage
	parallelism int
	files       map[digest.Digest]string
	blobs       map[digest.Digest][]byte
}

func newUploader(storage *storage.Storage, parallelism int) *uploader {
	return &uploader{storage: storage, parallelism: parallelism, files: map[digest.Digest]string{}, blobs: map[digest.Digest][]byte{}}
}

func (u *uploader) addFile(d digest.Digest, p string) {
	u.files[d] = p
}

func (u *uploader) addBlob(function digest.Function, data []byte) digest.Digest {
	g := function.NewGenerator(int64(len(data)))
	g.Write(data)
	d := g.Sum()
	u.blobs[d] = data
	return d
}

func (u *uploader) upload(ctx context.Context) error {
	all := make([]digest.Digest, 0, len(u.files)+len(u.blobs))
	for d := range u.files {
		all = append(all, d)
	}
	for d := range u.blobs {
		if _, ok := u.files[d]; !ok {
			all = append(all, d)
		}
	}
	var missing []digest.Digest
	for start := 0; start < len(all); start += blobstore.RecommendedFindMissingDigestsCount {
		end := min(start+blobstore.RecommendedFindMissingDigestsCount, len(all))
		b := digest.NewSetBuilder(end - start)
		for _, d := range all[start:end] {
			if d.GetSizeBytes() > 0 {
				b.Add(d)
			}
		}
		m, err := u.storage.ContentAddressableStorage.FindMissing(ctx, b.Build())
		if err != nil {
			return util.StatusWrap(err, "Failed to find missing output blobs")
		}
		missing = append(missing, m.Items()...)
	}

	small := map[digest.Digest][]byte{}
	var large []digest.Digest
	for _, d := range missing {
		_, isBlob := u.blobs[d]
		if d.GetSizeBytes() > u.storage.SmallBlobSizeBytes() || (!isBlob && !u.storage.Batched()) {
			// Streamed from the file. Locally there is no
			// request to fill, so reading files into memory
			// first would only cost a copy.
			large = append(large, d)
		} else if isBlob {
			small[d] = u.blobs[d]
		} else {
			data, err := readWhole(u.files[d], d.GetSizeBytes())
			if err != nil {
				return err
			}
			small[d] = data
		}
	}
	if err := u.storage.WriteSmallBlobs(ctx, small); err != nil {
		return util.StatusWrap(err, "Failed to upload outputs")
	}
	return parallel.Run(ctx, u.parallelism, len(large), func(ctx context.Context, i int) error {
		d := large[i]
		var b buffer.Buffer
		if data, ok := u.blobs[d]; ok {
			b = buffer.NewValidatedBufferFromByteSlice(data)
		} else {
			f, err := openForRead(u.files[d])
			if err != nil {
				return util.StatusWrapfWithCode(err, codes.Internal, "Failed to open %q", u.files[d])
			}
			// Hashed just before; the sandbox that could change
			// it is gone, so no second hashing pass.
			b = buffer.NewValidatedBufferFromReaderAt(f, d.GetSizeBytes())
		}
		if err := u.storage.PutBlob(ctx, d, b); err != nil {
			return util.StatusWrapf(err, "Failed to upload %s", d)
		}
		return nil
	})
}

func readWhole(p string, size int64) ([]byte, error) {
	f, err := openForRead(p)
	if err != nil {
		return nil, util.StatusWrapfWithCode(err, codes.Internal, "Failed to open %q", p)
	}
	defer f.Close()
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, util.StatusWrapfWithCode(err, codes.Internal, "Failed to read %q", p)
	}
	return data, nil
}
