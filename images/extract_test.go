package images

import (
	"archive/tar"
	"bytes"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type entry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
}

func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: mode, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := w.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			w.Write([]byte(e.body))
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func extract(t *testing.T, entries ...entry) (string, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsutil.RemoveAll(dir) })
	return dir, Extract(bytes.NewReader(tarOf(t, entries...)), dir)
}

func TestExtractFiles(t *testing.T) {
	dir, err := extract(t,
		entry{name: "bin/", typ: tar.TypeDir, mode: 0o555},
		entry{name: "bin/sh", typ: tar.TypeReg, mode: 0o4755, body: "shell"},
		entry{name: "bin/ash", typ: tar.TypeLink, link: "bin/sh"},
		entry{name: "usr/bin/env", typ: tar.TypeSymlink, link: "/bin/sh"},
		entry{name: "./etc/passwd", typ: tar.TypeReg, body: "root:x:0:0::/:/bin/sh\n"},
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
		{"absolute", []entry{{name: "/etc/passwd", typ: tar.TypeReg, body: "x"}}, "absolute"},
		{"dotdot", []entry{{name: "a/../../escape", typ: tar.TypeReg, body: "x"}}, `".."`},
		{"symlink then write through it", []entry{
			{name: "evil", typ: tar.TypeSymlink, link: outside},
			{name: "evil/pwned", typ: tar.TypeReg, body: "x"},
		}, "not a directory inside the layer"},
		{"relative symlink then write through it", []entry{
			{name: "a/", typ: tar.TypeDir},
			{name: "a/up", typ: tar.TypeSymlink, link: "../../../../../../../../" + outside},
			{name: "a/up/pwned", typ: tar.TypeReg, body: "x"},
		}, "not a directory inside the layer"},
		{"hard link out", []entry{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}}, "outside the layer"},
		{"hard link through a symlink", []entry{
			{name: "evil", typ: tar.TypeSymlink, link: "/etc"},
			{name: "h", typ: tar.TypeLink, link: "evil/passwd"},
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
		entry{name: "dev/", typ: tar.TypeDir},
		entry{name: "dev/sda", typ: tar.TypeBlock},
		entry{name: "dev/mem", typ: tar.TypeChar},
		entry{name: "dev/fifo", typ: tar.TypeFifo},
		entry{name: "dev/ok", typ: tar.TypeReg, body: "x"},
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
		entry{name: "etc/", typ: tar.TypeDir},
		entry{name: "etc/.wh.shadow", typ: tar.TypeReg},
		entry{name: "opt/", typ: tar.TypeDir},
		entry{name: "opt/.wh..wh..opq", typ: tar.TypeReg},
		entry{name: "opt/new", typ: tar.TypeReg, body: "x"},
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
