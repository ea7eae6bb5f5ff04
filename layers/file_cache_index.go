package layers

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
)

// The file cache's index on disk is its directory itself: each file's
// name says which FileKey it holds (see fileName), so a restart finds
// what a previous run left by listing the directory.

// FileKey names one cached inode: the same content is kept twice when
// it is needed both executable and not, because the mode belongs to
// the inode that every layer hardlinks.
type FileKey struct {
	Digest     digest.Digest
	Executable bool
	// UnixMode and MtimeNanos come from an input file's node
	// properties (unix_mode, mtime) when the client sets them; zero
	// means the defaults (0444/0555 and InputTimestamp). A BitBake
	// client sends the build tree's real timestamps, so that make in
	// a later task sees the same ages as a local build would.
	UnixMode   uint32
	MtimeNanos int64
}

// fileKeyOf is the cache key of an input file node.
func fileKeyOf(d digest.Digest, f *remoteexecution.FileNode) FileKey {
	k := FileKey{Digest: d, Executable: f.IsExecutable}
	if m := f.GetNodeProperties().GetUnixMode(); m != nil {
		// Permission bits only: a cached inode is never setuid.
		k.UnixMode = m.GetValue() & 0o777
	}
	if t := f.GetNodeProperties().GetMtime(); t != nil && t.IsValid() {
		k.MtimeNanos = t.AsTime().UnixNano()
	}
	return k
}

// mode is the permission of the cache file for k.
func (k FileKey) mode() os.FileMode {
	if k.UnixMode != 0 {
		return os.FileMode(k.UnixMode)
	}
	return fileMode(k.Executable)
}

// mtime is the modification time of the cache file for k.
func (k FileKey) mtime() time.Time {
	if k.MtimeNanos != 0 {
		return time.Unix(0, k.MtimeNanos)
	}
	return InputTimestamp
}

// InputTimestamp is the modification time of every cached file, and so
// of every input file an action sees: 2000-01-01T00:00:00Z, as
// Buildbarn sets. One inode serves many actions, so the time cannot be
// the input's own; a fixed one makes `make` and other mtime-driven
// tools behave the same on every run and every worker.
var InputTimestamp = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// fileName is "<shard>/<hash>-<size>-<function>[-x]". The digest
// function is part of the name because SHA-256 and BLAKE3 hashes have
// the same length. Instance names are not: content is content.
func fileName(k FileKey) string {
	h := k.Digest.GetHashString()
	name := fmt.Sprintf("%s/%s-%d-%d", h[:2], h, k.Digest.GetSizeBytes(), k.Digest.GetDigestFunction().GetEnumValue())
	if k.Executable {
		name += "-x"
	}
	if k.UnixMode != 0 {
		name += fmt.Sprintf("-m%o", k.UnixMode)
	}
	if k.MtimeNanos != 0 {
		name += fmt.Sprintf("-t%d", k.MtimeNanos)
	}
	return name
}

func parseFileName(shard, name string) (FileKey, bool) {
	parts := strings.Split(name, "-")
	if len(parts) < 3 {
		return FileKey{}, false
	}
	var k FileKey
	for _, option := range parts[3:] {
		switch {
		case option == "x" && !k.Executable:
			k.Executable = true
		case strings.HasPrefix(option, "m") && k.UnixMode == 0:
			m, err := strconv.ParseUint(option[1:], 8, 32)
			if err != nil || m == 0 || m > 0o777 {
				return FileKey{}, false
			}
			k.UnixMode = uint32(m)
		case strings.HasPrefix(option, "t") && k.MtimeNanos == 0:
			t, err := strconv.ParseInt(option[1:], 10, 64)
			if err != nil || t == 0 {
				return FileKey{}, false
			}
			k.MtimeNanos = t
		default:
			return FileKey{}, false
		}
	}
	size, err1 := strconv.ParseInt(parts[1], 10, 64)
	fn, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || !strings.HasPrefix(parts[0], shard) {
		return FileKey{}, false
	}
	function, err := digest.EmptyInstanceName.GetDigestFunction(remoteexecution.DigestFunction_Value(fn), len(parts[0]))
	if err != nil {
		return FileKey{}, false
	}
	d, err := function.NewDigest(parts[0], size)
	if err != nil {
		return FileKey{}, false
	}
	k.Digest = d
	if fileName(k) != shard+"/"+name {
		return FileKey{}, false
	}
	return k, true
}

// reload indexes the files a previous run left. Anything that does
// not look like a complete cache file (wrong name, size or mode) is
// removed rather than trusted.
func (fc *fileCache) reload() error {
	root := filepath.Join(fc.dir, "files")
	shards, err := os.ReadDir(root)
	if err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to list file cache")
	}
	for _, shard := range shards {
		shardPath := filepath.Join(root, shard.Name())
		names, err := os.ReadDir(shardPath)
		if err != nil {
			return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to list file cache shard")
		}
		for _, n := range names {
			p := filepath.Join(shardPath, n.Name())
			k, ok := parseFileName(shard.Name(), n.Name())
			info, err := os.Lstat(p)
			if !ok || err != nil || !info.Mode().IsRegular() || info.Size() != k.Digest.GetSizeBytes() || info.Mode().Perm() != k.mode() {
				os.Remove(p)
				continue
			}
			fc.entries[k] = &fileCacheEntry{size: info.Size()}
			fc.lru.putOldest(k, struct{}{})
			fc.usedBytes += info.Size()
		}
	}
	return nil
}

func fileMode(executable bool) os.FileMode {
	if executable {
		return 0o555
	}
	return 0o444
}
