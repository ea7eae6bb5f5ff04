package images

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitzel/bitzel-worker/images/imagetest"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type entry = imagetest.Entry

func extract(t *testing.T, entries ...entry) (string, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsutil.RemoveAll(dir) })
	return dir, Extract(bytes.NewReader(imagetest.Tar(t, entries...)), dir)
}

func TestExtractFiles(t *testing.T) {
	dir, err := extract(t,
		entry{Name: "bin/", Type: tar.TypeDir, Mode: 0o555},
		entry{Name: "bin/sh", Type: tar.TypeReg, Mode: 0o4755, Body: "shell"},
		entry{Name: "bin/ash", Type: tar.TypeLink, Link: "bin/sh"},
		entry{Name: "usr/bin/env", Type: tar.TypeSymlink, Link: "/bin/sh"},
		entry{Name: "./etc/passwd", Type: tar.TypeReg, Body: "root:x:0:0::/:/bin/sh\n"},
	)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "bin/ash")); err != nil || string(b) != "shell" {
		t.Fatalf("bin/ash: %q, %v", b, err)
	}
	info, err := os.Stat(filepath.Join(dir, "bin/sh"))
	if err != nil || info.Mode().Perm() != 0o755 || info.Mode()&os.ModeSetuid != 0 {
		t.Fatalf("bin/sh: %v %v (set-user-ID must be dropped)", info.Mode(), err)
	}
	if info, err := os.Stat(filepath.Join(dir, "bin")); err != nil || info.Mode().Perm() != 0o755 {
		// 0555 | 0700: the owner keeps write so that the layer
		// can be removed.
		t.Fatalf("bin: %v %v", info.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "usr/bin/env")); err != nil || l != "/bin/sh" {
		t.Fatalf("usr/bin/env: %q %v", l, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
}

func TestExtractHostile(t *testing.T) {
	outside := t.TempDir()
	for _, tc := range []struct {
		name    string
		entries []entry
		want    string
	}{
		{"absolute", []entry{{Name: "/etc/passwd", Type: tar.TypeReg, Body: "x"}}, "absolute"},
		{"dotdot", []entry{{Name: "a/../../escape", Type: tar.TypeReg, Body: "x"}}, `".."`},
		{"symlink then write through it", []entry{
			{Name: "evil", Type: tar.TypeSymlink, Link: outside},
			{Name: "evil/pwned", Type: tar.TypeReg, Body: "x"},
		}, "not a directory inside the layer"},
		{"relative symlink then write through it", []entry{
			{Name: "a/", Type: tar.TypeDir},
			{Name: "a/up", Type: tar.TypeSymlink, Link: "../../../../../../../../" + outside},
			{Name: "a/up/pwned", Type: tar.TypeReg, Body: "x"},
		}, "not a directory inside the layer"},
		{"hard link out", []entry{{Name: "h", Type: tar.TypeLink, Link: "../../etc/passwd"}}, "outside the layer"},
		{"hard link through a symlink", []entry{
			{Name: "evil", Type: tar.TypeSymlink, Link: "/etc"},
			{Name: "h", Type: tar.TypeLink, Link: "evil/passwd"},
		}, "not a directory inside the layer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := extract(t, tc.entries...)
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want FAILED_PRECONDITION containing %q", err, tc.want)
			}
			if names, _ := os.ReadDir(outside); len(names) != 0 {
				t.Fatalf("written outside the layer: %v", names)
			}
		})
	}
}

func TestExtractSkipsDevices(t *testing.T) {
	dir, err := extract(t,
		entry{Name: "dev/", Type: tar.TypeDir},
		entry{Name: "dev/sda", Type: tar.TypeBlock},
		entry{Name: "dev/mem", Type: tar.TypeChar},
		entry{Name: "dev/fifo", Type: tar.TypeFifo},
		entry{Name: "dev/ok", Type: tar.TypeReg, Body: "x"},
	)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := os.ReadDir(filepath.Join(dir, "dev"))
	if len(names) != 1 || names[0].Name() != "ok" {
		t.Fatalf("dev holds %v, want only ok: devices are skipped", names)
	}
}

func TestExtractWhiteouts(t *testing.T) {
	dir, err := extract(t,
		entry{Name: "etc/", Type: tar.TypeDir},
		entry{Name: "etc/.wh.shadow", Type: tar.TypeReg},
		entry{Name: "opt/", Type: tar.TypeDir},
		entry{Name: "opt/.wh..wh..opq", Type: tar.TypeReg},
		entry{Name: "opt/new", Type: tar.TypeReg, Body: "x"},
	)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "etc/shadow"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Fatalf("etc/shadow: mode %o rdev %d, want an overlay whiteout (char 0/0)", st.Mode, st.Rdev)
	}
	if _, err := os.Lstat(filepath.Join(dir, "etc/.wh.shadow")); !os.IsNotExist(err) {
		t.Fatalf("the whiteout marker itself was extracted: %v", err)
	}
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(dir, "opt"), OpaqueXattr, buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Fatalf("opt: %s = %q, %v; want y", OpaqueXattr, buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "opt/.wh..wh..opq")); !os.IsNotExist(err) {
		t.Fatalf("the opaque marker itself was extracted: %v", err)
	}
}
