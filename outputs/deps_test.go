package outputs

import (
	"go/build"
	"path/filepath"
	"strings"
	"testing"
)

// The packages split out of cas/ depend one way: execroot -> outputs ->
// layers -> storage, with layerproperty below layers and importable by
// clients without any of them. Go forbids cycles; this also keeps a package
// from reaching past its neighbours (storage into layerproperty, say)
// and layerproperty free of the worker.
func TestPackageArrowsPointOneWay(t *testing.T) {
	const module = "github.com/bitzel/bitzel-worker/"
	allowed := map[string][]string{
		"layerproperty": {},
		"storage":       {"internal/parallel"},
		"layers":        {"storage", "layerproperty", "internal/parallel", "internal/fsutil"},
		"outputs":       {"layers", "storage", "internal/parallel"},
		// An action's exec root sits on the layers and is read by
		// output capture; it knows the sandbox's Mount and Result,
		// and nothing of the worker.
		"execroot": {"layers", "outputs", "storage", "sandbox", "internal/fsutil"},
	}
	for pkg, may := range allowed {
		p, err := build.ImportDir(filepath.Join("..", pkg), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imported := range p.Imports {
			own, ok := strings.CutPrefix(imported, module)
			if !ok {
				continue
			}
			found := false
			for _, m := range may {
				found = found || own == m
			}
			if !found {
				t.Errorf("%s imports %s, which is not below it", pkg, own)
			}
		}
	}
}
