package layers

import (
	"reflect"
	"testing"
)

type layerUseSummary struct {
	Path         string
	Files, Bytes int64
	Built        bool
}

func summarise(t *testing.T, r *InputRoot) []layerUseSummary {
	t.Helper()
	var got []layerUseSummary
	for i, u := range r.Layers {
		if u.Digest.GetSizeBytes() == 0 && u.Files > 0 {
			t.Fatalf("layer %d (%s) has no digest", i, u.Path)
		}
		if !u.Built && u.Time != 0 {
			t.Fatalf("layer %s was a cache hit but took %v", u.Path, u.Time)
		}
		got = append(got, layerUseSummary{u.Path, u.Files, u.Bytes, u.Built})
	}
	return got
}

func TestInputRootReportsWhichLayersWereBuiltAndWhichCached(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{Planner: PlannerOptions{SplitThreshold: 5}})
	big := filesDir("b", 6)
	big["inner"] = filesDir("i", 5)
	root := e.putTree(dir{"big": big, "small": filesDir("s", 2), "top": file("top")})

	first := e.mustMaterialize(root)
	want := []layerUseSummary{
		{".", 3, 7, true}, // small/sa, small/sb, top
		{"big", 6, 12, true},
		{"big/inner", 5, 10, true},
	}
	if got := summarise(t, first); !reflect.DeepEqual(got, want) {
		t.Fatalf("first materialisation: layers %+v, want %+v", got, want)
	}
	for i, u := range first.Layers {
		if u.Time <= 0 {
			t.Fatalf("built layer %d (%s) has no build time", i, u.Path)
		}
	}

	// Known input root, every layer cached: the fast path.
	for i := range want {
		want[i].Built = false
	}
	if got := summarise(t, e.mustMaterialize(root)); !reflect.DeepEqual(got, want) {
		t.Fatalf("second materialisation: layers %+v, want %+v", got, want)
	}

	// A new input root sharing big: its root layer is built, big's
	// layers come from the cache.
	other := e.mustMaterialize(e.putTree(dir{"big": big, "new": file("n")}))
	want = []layerUseSummary{
		{".", 1, 1, true},
		{"big", 6, 12, false},
		{"big/inner", 5, 10, false},
	}
	if got := summarise(t, other); !reflect.DeepEqual(got, want) {
		t.Fatalf("input root sharing big: layers %+v, want %+v", got, want)
	}
}
