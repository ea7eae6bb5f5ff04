package layers

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

func mountPaths(r *InputRoot) []string {
	var out []string
	for _, m := range r.Mounts {
		out = append(out, m.Path)
	}
	return out
}

func filesDir(prefix string, n int) dir {
	d := dir{}
	for i := 0; i < n; i++ {
		d[prefix+string(rune('a'+i))] = file(prefix + string(rune('a'+i)))
	}
	return d
}

func TestPlannerSplitsLargeSubtrees(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{Planner: PlannerOptions{SplitThreshold: 5}})
	inner := filesDir("i", 5)
	big := filesDir("b", 6)
	big["inner"] = inner
	root := e.putTree(dir{"big": big, "small": filesDir("s", 2), "top": file("top")})
	r := e.mustMaterialize(root)
	if got, want := mountPaths(r), []string{"", "big", "big/inner"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("mounts %q, want %q", got, want)
	}
	rootLayer := readTree(t, r.Mounts[0].Layers[0])
	want := []string{". dir -r-xr-xr-x", "big dir -r-xr-xr-x", "small dir -r-xr-xr-x", "small/sa file -r--r--r-- sa", "small/sb file -r--r--r-- sb", "top file -r--r--r-- top"}
	if !reflect.DeepEqual(rootLayer, want) {
		t.Fatalf("root layer %q", rootLayer)
	}
	bigLayer := readTree(t, r.Mounts[1].Layers[0])
	if len(bigLayer) != 8 || bigLayer[len(bigLayer)-1] != "inner dir -r-xr-xr-x" {
		t.Fatalf("big layer %q", bigLayer)
	}
	if n := len(readTree(t, r.Mounts[2].Layers[0])); n != 6 {
		t.Fatalf("inner layer has %d entries", n)
	}
	// Nothing split below inner: its key is its real digest.
	innerDigest := e.putTree(inner)
	if !strings.Contains(r.Mounts[2].Layers[0], innerDigest.GetHashString()) {
		t.Fatalf("inner layer %s not keyed by %s", r.Mounts[2].Layers[0], innerDigest)
	}
	// The root layer is keyed by the rewritten root, not the real one.
	if strings.Contains(r.Mounts[0].Layers[0], root.GetHashString()) {
		t.Fatal("root layer keyed by the real root digest although big was split out")
	}
	// The rewritten key is the digest of the root with big replaced
	// by the empty directory.
	rewritten := e.directoryOf(dir{"big": dir{}, "small": filesDir("s", 2), "top": file("top")}, false)
	if !strings.Contains(r.Mounts[0].Layers[0], digestOf(marshal(rewritten)).GetHashString()) {
		t.Fatal("root layer key is not the digest of the rewritten root")
	}

	// The same big directory elsewhere shares its layers.
	r2 := e.mustMaterialize(e.putTree(dir{"elsewhere": dir{"copy": big}}))
	if got, want := mountPaths(r2), []string{"", "elsewhere", "elsewhere/copy", "elsewhere/copy/inner"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("mounts %q, want %q", got, want)
	}
	if r2.Mounts[2].Layers[0] != r.Mounts[1].Layers[0] || r2.Mounts[3].Layers[0] != r.Mounts[2].Layers[0] {
		t.Fatal("identical subtrees did not share layers")
	}
}

func TestPlannerMountCapKeepsLargest(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{Planner: PlannerOptions{SplitThreshold: 2, MaxMounts: 2}})
	r := e.mustMaterialize(e.putTree(dir{"a": filesDir("a", 3), "b": filesDir("b", 5), "c": filesDir("c", 4)}))
	if got, want := mountPaths(r), []string{"", "b"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("mounts %q, want %q", got, want)
	}
	if n := len(readTree(t, r.Mounts[0].Layers[0])); n != 1+(1+3)+1+(1+4) {
		t.Fatalf("root layer has %d entries", n)
	}
}

func TestLayersPropertyStacksListedTrees(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{})
	l1 := e.putTree(dir{"x": file("from l1"), "shared": file("l1")})
	l2 := e.putTree(dir{"y": file("from l2"), "shared": file("l2"), "up": symlink("../../top")})
	root := e.putTree(dir{
		"top": file("top"),
		"work": dir{
			"sysroot": union{Entries: dir{"own": file("own")}, Layers: layerString(l1) + " " + layerString(l2)},
			"bare":    union{Entries: dir{}, Layers: layerString(l2)},
		},
	})
	r := e.mustMaterialize(root)
	if got, want := mountPaths(r), []string{"", "work/bare", "work/sysroot"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("mounts %q, want %q", got, want)
	}
	sys := r.Mounts[2].Layers
	if len(sys) != 3 {
		t.Fatalf("sysroot layers %q", sys)
	}
	if got := readTree(t, sys[0]); !reflect.DeepEqual(got, []string{". dir -r-xr-xr-x", "own file -r--r--r-- own"}) {
		t.Fatalf("own entries layer %q", got)
	}
	if !strings.Contains(sys[1], l1.GetHashString()) || !strings.Contains(sys[2], l2.GetHashString()) {
		t.Fatalf("listed trees out of order: %q", sys)
	}
	// An empty own-entries layer is omitted.
	if bare := r.Mounts[1].Layers; len(bare) != 1 || bare[0] != sys[2] {
		t.Fatalf("bare union layers %q", bare)
	}
	// The parent layer holds empty directories at the mount points.
	if got := readTree(t, filepath.Join(r.Mounts[0].Layers[0], "work")); !reflect.DeepEqual(got, []string{". dir -r-xr-xr-x", "bare dir -r-xr-xr-x", "sysroot dir -r-xr-xr-x"}) {
		t.Fatalf("root layer work/ %q", got)
	}
}

func TestLayersPropertyValidation(t *testing.T) {
	e := newTestEnv(t, MaterializerOptions{Planner: PlannerOptions{MaxLowerDirs: 2}})
	l1 := e.putTree(dir{"x": file("x")})
	l2 := e.putTree(dir{"y": file("y")})
	absent := digestOf([]byte("no such tree"))
	nested := e.directoryOf(dir{"inner": union{Entries: dir{}, Layers: layerString(l1)}}, true)
	for _, tc := range []struct {
		name   string
		layers string
		own    dir
		code   codes.Code
		want   string
	}{
		{"malformed", "abc", dir{}, codes.InvalidArgument, "not of the form"},
		{"bad hash", "xyz/12", dir{}, codes.InvalidArgument, "xyz/12"},
		{"duplicate", layerString(l1) + " " + layerString(l1), dir{}, codes.InvalidArgument, "more than once"},
		{"too many lowerdirs", layerString(l1) + " " + layerString(l2), dir{"own": file("o")}, codes.InvalidArgument, "lowerdirs exceed"},
		{"nested union", layerString(l1), dir{"sub": dir{"deeper": union{Entries: dir{}, Layers: layerString(l2)}}}, codes.InvalidArgument, "nested inside the own entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.materialize(e.putTree(dir{"u": union{Entries: tc.own, Layers: tc.layers}}))
			requireCode(t, err, tc.code, `"u`, tc.want)
		})
	}

	t.Run("missing listed tree", func(t *testing.T) {
		_, err := e.materialize(e.putTree(dir{"u": union{Entries: dir{}, Layers: layerString(l1) + " " + layerString(absent)}}))
		if got := missingSubjects(t, err); !reflect.DeepEqual(got, []string{subject(absent)}) {
			t.Fatalf("missing %q", got)
		}
	})

	t.Run("listed tree properties not interpreted", func(t *testing.T) {
		// nested holds a union naming l1; as a listed tree it is
		// materialised whole, property ignored, so even a broken
		// property inside must not matter.
		broken := e.directoryOf(dir{"inner": union{Entries: dir{"f": file("f")}, Layers: "garbage " + layerString(absent)}}, true)
		listed := e.putDirectory(broken)
		r, err := e.materialize(e.putTree(dir{"u": union{Entries: dir{}, Layers: layerString(listed) + " " + layerString(e.putDirectory(nested))}}))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Release()
		if got := readTree(t, r.Mounts[1].Layers[0]); !reflect.DeepEqual(got, []string{". dir -r-xr-xr-x", "inner dir -r-xr-xr-x", "inner/f file -r--r--r-- f"}) {
			t.Fatalf("listed tree layer %q", got)
		}
	})

	t.Run("listed tree symlink escaping", func(t *testing.T) {
		// u is at depth 1: "../x" stays inside, "../../x" leaves.
		ok := e.putTree(dir{"s": symlink("../x")})
		r, err := e.materialize(e.putTree(dir{"u": union{Entries: dir{}, Layers: layerString(ok)}}))
		if err != nil {
			t.Fatal(err)
		}
		r.Release()
		bad := e.putTree(dir{"s": symlink("../../x")})
		_, err = e.materialize(e.putTree(dir{"u": union{Entries: dir{}, Layers: layerString(bad)}}))
		requireCode(t, err, codes.InvalidArgument, "escapes", `"u [bitzel.layers`)
	})
}
