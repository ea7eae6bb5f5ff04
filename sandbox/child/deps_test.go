package child

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// allowedModules are the only non-standard imports of the sandbox's
// PID 1 and launcher (this package and cmd/bitzel-sandbox-init): the
// init binary is started once per sandbox, and Go's start-up grows
// with the binary (BENCHMARKS.md: a 3.5 MB init instead of re-executing
// the 57 MB worker). Whatever else it would need belongs in the worker.
var allowedModules = []string{"golang.org/x/sys/unix"}

// TestChildImportsStayMinimal reads the imports of this package's
// files and of the init command, so that the rule holds without the go
// tool (the rootless test run has none on its PATH).
func TestChildImportsStayMinimal(t *testing.T) {
	const module = "github.com/bitzel/bitzel-worker/"
	dirs := map[string]string{"sandbox/child": ".", "cmd/bitzel-sandbox-init": "../../cmd/bitzel-sandbox-init"}
	for name, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files in %s (%v)", name, dir, err)
		}
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, spec := range f.Imports {
				path, _ := strconv.Unquote(spec.Path.Value)
				if !strings.Contains(strings.Split(path, "/")[0], ".") || path == module+"sandbox/child" || allowed(path) {
					continue
				}
				t.Errorf("%s imports %q: the sandbox's init may import only the standard library and %v", filepath.Join(name, filepath.Base(file)), path, allowedModules)
			}
		}
	}
}

func allowed(path string) bool {
	for _, m := range allowedModules {
		if path == m || strings.HasPrefix(path, m+"/") {
			return true
		}
	}
	return false
}
