package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bitzel/bitzel-worker/internal/testsupport"
)

func TestWritesLandInUpperAndLeaveLayerIntact(t *testing.T) {
	e := newEnv(t)
	layer := e.layer("base", map[string]string{"a.txt": "original\n", "b.txt": "doomed\n", "dir/c.txt": "c\n"})
	m := e.mount("", layer)
	o := e.run(&Spec{Mounts: []Mount{m}, Argv: []string{"/bin/sh", "-c",
		`echo appended >> a.txt && chmod 777 a.txt && rm b.txt && rm -r dir && echo new > new.txt`}})
	o.expectExit(t, 0)

	for name, want := range map[string]string{"a.txt": "original\n", "b.txt": "doomed\n", "dir/c.txt": "c\n"} {
		data, err := os.ReadFile(filepath.Join(layer, name))
		if err != nil || string(data) != want {
			t.Errorf("layer %s changed: %q, %v", name, data, err)
		}
		if info, _ := os.Stat(filepath.Join(layer, name)); info.Mode().Perm() != 0o644 {
			t.Errorf("layer %s mode changed to %v", name, info.Mode())
		}
	}
	if data, _ := os.ReadFile(filepath.Join(m.UpperDir, "a.txt")); string(data) != "original\nappended\n" {
		t.Errorf("upper a.txt = %q", data)
	}
	if data, _ := os.ReadFile(filepath.Join(m.UpperDir, "new.txt")); string(data) != "new\n" {
		t.Errorf("upper new.txt = %q", data)
	}
	for _, name := range []string{"b.txt", "dir"} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(m.UpperDir, name), &st); err != nil {
			t.Fatalf("no whiteout for %s: %v", name, err)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s in upper is mode %o rdev %d, want a 0/0 character device (whiteout)", name, st.Mode, st.Rdev)
		}
	}
}

// manyLayers makes n layers; layer i holds "f" = i and "only<i>".
func manyLayers(e *env, n int) []string {
	layers := make([]string, n)
	for i := range layers {
		layers[i] = e.layer(fmt.Sprintf("l%03d", i), map[string]string{
			"f":                        fmt.Sprint(i),
			fmt.Sprintf("only%03d", i): "x",
			"deep/f":                   fmt.Sprint(i),
		})
	}
	return layers
}

func testManyLayers(t *testing.T, legacy bool) {
	e := newEnv(t, func(c *Config) { c.LegacyOverlay = legacy })
	const n = 400
	layers := manyLayers(e, n)
	o := e.run(&Spec{Mounts: []Mount{e.mount("", layers...)}, Argv: []string{"/bin/sh", "-c", `cat f; echo; cat deep/f; echo; ls | grep -c '^only'`}})
	o.expectExit(t, 0)
	// Topmost first: layer 0 wins.
	if got := lines(o.stdout); len(got) != 3 || got[0] != "0" || got[1] != "0" || got[2] != fmt.Sprint(n) {
		t.Errorf("merge of %d layers: %q, want [0 0 %d]", n, got, n)
	}
	// And the other way round.
	reversed := make([]string, n)
	for i := range layers {
		reversed[i] = layers[n-1-i]
	}
	o = e.run(&Spec{Mounts: []Mount{e.mount("", reversed...)}, Argv: []string{"/bin/cat", "f"}})
	o.expectExit(t, 0)
	if o.stdout != fmt.Sprint(n-1) {
		t.Errorf("reversed merge: f = %q, want %d", o.stdout, n-1)
	}
}

func TestFourHundredLayers(t *testing.T)       { testManyLayers(t, false) }
func TestFourHundredLayersLegacy(t *testing.T) { testManyLayers(t, true) }

func TestTooManyLayersIsAClearError(t *testing.T) {
	e := newEnv(t)
	layer := e.dir("layers/one")
	layers := make([]string, 501)
	for i := range layers {
		layers[i] = layer
	}
	_, err := e.tryRun(&Spec{Mounts: []Mount{e.mount("", layers...)}, Argv: []string{"/bin/true"}})
	if err == nil || !strings.Contains(err.Error(), "501 layers") {
		t.Errorf("error %v, want one naming the 501 layers", err)
	}
}

func TestNestedOverlayAtSubPath(t *testing.T) {
	e := newEnv(t)
	root := e.layer("root", map[string]string{"top.txt": "top\n", "sub/dir/.keep": ""})
	inner := e.layer("inner", map[string]string{"x.txt": "inner-x\n"})
	innerLower := e.layer("inner-lower", map[string]string{"x.txt": "shadowed\n", "y.txt": "lower-y\n"})
	rootMount := e.mount("", root)
	subMount := e.mount("sub/dir", inner, innerLower)
	o := e.run(&Spec{
		Mounts:           []Mount{rootMount, subMount},
		WorkingDirectory: "sub",
		Argv:             []string{"/bin/sh", "-c", `cat ../top.txt dir/x.txt dir/y.txt; ls -a dir | tr '\n' ' '; echo written > dir/z.txt`},
	})
	o.expectExit(t, 0)
	if o.stdout != "top\ninner-x\nlower-y\n. .. x.txt y.txt z.txt " && o.stdout != "top\ninner-x\nlower-y\n. .. x.txt y.txt " {
		t.Errorf("nested overlay view:\n%s", o.stdout)
	}
	if data, _ := os.ReadFile(filepath.Join(subMount.UpperDir, "z.txt")); string(data) != "written\n" {
		t.Errorf("write under the sub-path mount went elsewhere: upper has %q", data)
	}
	if _, err := os.Stat(filepath.Join(rootMount.UpperDir, "sub/dir/z.txt")); err == nil {
		t.Error("write under the sub-path mount landed in the exec root's upper")
	}
	if _, err := os.Stat(filepath.Join(root, "sub/dir/.keep")); err != nil {
		t.Error(err)
	}
}

func TestExecRootAsRootFileSystem(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ExecRootIsRoot = true })
	userland := busyboxLayer(t, e)
	o := e.run(&Spec{
		Mounts: []Mount{e.mount("", userland)},
		Argv:   []string{"/bin/sh", "-c", `ls /; test -e /usr && echo host-usr-visible; echo hermetic > /out.txt; cat /out.txt`},
	})
	o.expectExit(t, 0)
	if strings.Contains(o.stdout, "host-usr-visible") || !strings.Contains(o.stdout, "hermetic") {
		t.Errorf("hermetic root:\n%s\n%s", o.stdout, o.stderr)
	}
}

// busyboxLayer is a layer directory holding a static busybox as /bin's
// shell and a few of its applets: a whole userland, for actions whose
// exec root is their root.
func busyboxLayer(t *testing.T, e *env) string {
	t.Helper()
	busybox, err := testsupport.StaticBusybox()
	if err != nil {
		t.Fatal(err)
	}
	userland := e.dir("layers/userland/bin")
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(userland, "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "ls", "cat"} {
		if err := os.Symlink("busybox", filepath.Join(userland, applet)); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Dir(userland)
}
