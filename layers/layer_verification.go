package layers

import (
	"log"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A layer a previous run left is a tree of hardlinks to file cache
// inodes that were verified in that run, not in this one: bit rot or a
// change on disk shows in the file cache's copy and in every layer
// linking it. So a reloaded layer is served only once a check on its
// first use in this run finds that every file is the very inode the
// file cache now holds (verified by hashing on its own first use) and
// that names, kinds, symlink targets and directory modes are those of
// the Directory tree. That costs a stat per entry, not a hash; a layer
// whose files are copies (hardlink limit) or were fetched again fails
// the check and is rebuilt.

// checkLocked runs check on a reloaded, unverified layer, which is not
// leased, with lc.mu held; it returns with lc.mu released. A layer that
// passes is leased; one that fails is dropped.
func (lc *layerCache) checkLocked(e *layerEntry, check LayerCheckFunc) (LayerLease, bool) {
	ch := make(chan struct{})
	e.building = ch
	e.refs++ // not evicted while being checked
	lc.mu.Unlock()
	ok := check != nil && check(filepath.Join(lc.layerPath(e.name), "t"))
	lc.mu.Lock()
	e.refs--
	e.building = nil
	defer close(ch)
	if ok {
		e.verified = true
		layerCacheHits.Inc()
		lease := lc.newLeaseLocked(e)
		lc.mu.Unlock()
		return lease, true
	}
	if check != nil {
		log.Printf("layer cache: dropped layer %s: it does not match its Directory tree or the verified file cache; building it again", e.name)
	}
	trash, moved := lc.unpublishLocked(e)
	layerCacheBytes.Set(float64(lc.usedBytes))
	lc.mu.Unlock()
	if moved {
		lc.remove([]string{trash})
	}
	return nil, false
}

// layerMatches reports whether dir holds exactly the tree at root, each
// file being the file cache's inode for its key.
func layerMatches(t tree, root *dirInfo, dir string, files *FileSet) bool {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&0o7777 != directoryMode(root.dir) {
		unix.Close(fd)
		return false
	}
	return directoryMatches(t, root, fd, files)
}

// directoryMatches checks one directory of a layer, open as fd, which
// it closes.
func directoryMatches(t tree, di *dirInfo, fd int, files *FileSet) bool {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	dir := di.dir
	if err != nil || len(names) != len(dir.Files)+len(dir.Directories)+len(dir.Symlinks) {
		return false
	}
	var st unix.Stat_t
	for i, file := range dir.Files {
		dev, ino, ok := files.inode(fileKeyOf(di.fileDigests[i], file))
		if !ok || unix.Fstatat(fd, file.Name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Dev != dev || st.Ino != ino {
			return false
		}
	}
	buf := make([]byte, unix.PathMax)
	for _, s := range dir.Symlinks {
		n, err := unix.Readlinkat(fd, s.Name, buf)
		if err != nil || string(buf[:n]) != s.Target {
			return false
		}
	}
	for i, c := range dir.Directories {
		child := t[di.dirDigests[i]]
		if unix.Fstatat(fd, c.Name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o7777 != directoryMode(child.dir) {
			return false
		}
		cfd, err := unix.Openat(fd, c.Name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil || !directoryMatches(t, child, cfd, files) {
			return false
		}
	}
	return true
}

// inode is the device and inode number of the cache file for k, which
// the set pins.
func (s *FileSet) inode(k FileKey) (dev, ino uint64, ok bool) {
	var st unix.Stat_t
	if unix.Fstatat(s.cache.dirFd, fileName(k), &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return 0, 0, false
	}
	return st.Dev, st.Ino, true
}
