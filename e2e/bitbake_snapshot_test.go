package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// bbCheckLog: the task's log came back with the outputs.
func bbCheckLog(t *testing.T, wd string, r *bbRecipe, task *bbTask) {
	t.Helper()
	log, err := os.ReadFile(filepath.Join(wd, "temp", "log.do_"+task.name))
	if err != nil {
		t.Fatalf("%s:do_%s: no task log: %v", r.pn, task.name, err)
	}
	want := map[string]string{"configure": "config.status: creating Makefile", "compile": "NOTE: make -j", "install": "NOTE: "}[task.name]
	if want != "" && !strings.Contains(string(log), want) {
		t.Errorf("%s:do_%s: log.do_%s lacks %q:\n%s", r.pn, task.name, task.name, want, log)
	}
}

// bbEntry is a file, directory or symlink of a snapshot.
type bbEntry struct {
	kind   string // "f", "d", "l"
	mode   uint32 // permission bits with setuid, setgid, sticky
	sum    string
	target string
}

// bbSnapshot maps WORKDIR-relative paths to what is there.
type bbSnapshot map[string]bbEntry

func bbSnap(t *testing.T, wd string, paths []string) bbSnapshot {
	t.Helper()
	snap := bbSnapshot{}
	for _, p := range paths {
		err := filepath.Walk(filepath.Join(wd, p), func(path string, info fs.FileInfo, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(wd, path)
			e := bbEntry{mode: bbUnixMode(info.Mode())}
			switch {
			case info.Mode()&fs.ModeSymlink != 0:
				e.kind, e.mode = "l", 0
				e.target, err = os.Readlink(path)
			case info.IsDir():
				e.kind = "d"
			default:
				e.kind = "f"
				var data []byte
				data, err = os.ReadFile(path)
				if strings.HasPrefix(rel, "temp/log.do_") {
					// make -j interleaves its commands differently from
					// run to run: a log is compared as a set of lines.
					lines := strings.SplitAfter(string(data), "\n")
					sort.Strings(lines)
					data = []byte(strings.Join(lines, ""))
				}
				sum := sha256.Sum256(data)
				e.sum = hex.EncodeToString(sum[:])
			}
			snap[rel] = e
			return err
		})
		if err != nil {
			t.Fatalf("snapshot %s: %v", p, err)
		}
	}
	return snap
}

func bbUnixMode(m fs.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// bbCompare returns the differences between a remote and a local
// snapshot: kind, content, symlink target and mode must all match.
func bbCompare(remote, local bbSnapshot) (errs []string) {
	var paths []string
	for p := range remote {
		paths = append(paths, p)
	}
	for p := range local {
		if _, ok := remote[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		r, inRemote := remote[p]
		l, inLocal := local[p]
		switch {
		case !inRemote:
			errs = append(errs, p+": missing remotely")
		case !inLocal:
			errs = append(errs, p+": only remote")
		case r.kind != l.kind || r.sum != l.sum || r.target != l.target:
			errs = append(errs, fmt.Sprintf("%s: %+v remotely, %+v locally", p, r, l))
		case r.mode != l.mode:
			errs = append(errs, fmt.Sprintf("%s: mode %04o remotely, %04o locally", p, r.mode, l.mode))
		}
	}
	return errs
}

func bbInode(info fs.FileInfo) uint64 { return info.Sys().(*syscall.Stat_t).Ino }

func bbEmit(t *testing.T, topdir string, r *bbRecipe, task string) string {
	t.Helper()
	cmd := exec.Command("/bin/sh", filepath.Join(bbFixture, "emit-runscript.sh"), topdir, r.file(), task)
	cmd.Env = append(os.Environ(), "PARALLEL_MAKE=-j 2")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("emit run.do_%s for %s: %v\n%s", task, r.pn, err, stderr.String())
	}
	return string(out)
}

func bbWriteFile(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// bbCopyTree copies src into dst (merging), keeping modes and symlinks.
func bbCopyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(path string, info fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			os.Remove(target)
			return os.Symlink(link, target)
		case info.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return os.Chmod(target, info.Mode()|0o700)
		default:
			in, err := os.Open(path)
			if err != nil {
				return err
			}
			defer in.Close()
			os.Remove(target)
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, in); err != nil {
				out.Close()
				return err
			}
			out.Close()
			return os.Chmod(target, info.Mode())
		}
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}
