package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestSmoke(t *testing.T) {
	dir, _ := os.MkdirTemp("", "sbx")
	os.Chmod(dir, 0o755)
	defer os.RemoveAll(dir)
	for _, d := range []string{"layer", "upper", "work", "state"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "layer", "hello.txt"), []byte("hi from layer\n"), 0o644)
	r, err := NewNamespaceRunner(Config{StateDir: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Run(context.Background(), &Spec{
		Mounts: []Mount{{Layers: []string{filepath.Join(dir, "layer")}, UpperDir: filepath.Join(dir, "upper"), WorkDir: filepath.Join(dir, "work")}},
		Argv:   []string{"/bin/sh", "-c", "cat hello.txt; echo $$; hostname; id; pwd; ls /; echo out > new.txt"},
		Env:    []string{"PATH=/usr/bin:/bin"},
		StdoutPath: filepath.Join(dir, "stdout"), StderrPath: filepath.Join(dir, "stderr"),
	})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(filepath.Join(dir, "stdout"))
	errOut, _ := os.ReadFile(filepath.Join(dir, "stderr"))
	t.Logf("%+v\nstdout:\n%s\nstderr:\n%s", res, out, errOut)
}
