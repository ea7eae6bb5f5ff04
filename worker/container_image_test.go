package worker

import (
	"archive/tar"
	"context"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/images"
	"github.com/bitzel/bitzel-worker/images/imagetest"
	"github.com/bitzel/bitzel-worker/sandbox/child"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"google.golang.org/grpc/codes"
)

// An input root and a container image whose layers together pass the
// kernel's 500 lowerdirs are the client's (or operator's) to change:
// FAILED_PRECONDITION naming both counts, before anything runs, instead
// of an INTERNAL failure at the mount.
func TestContainerImageWithTooManyLayersIsRefusedClearly(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image,
		imagetest.Layer(t, imagetest.Entry{Name: "a", Type: tar.TypeReg, Body: "a"}),
		imagetest.Layer(t, imagetest.Entry{Name: "b", Type: tar.TypeReg, Body: "b"}))
	if err != nil {
		t.Fatal(err)
	}
	layoutDir, _ := imagetest.WriteSources(t, t.TempDir(), "example.org/two:1", img)
	store, err := images.NewStore(imagetest.LayerCache(t), map[string]string{"docker://example.org/two:1": layoutDir})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		inputLayers int
		wantRun     bool
	}{{child.MaxLowers - 2, true}, {child.MaxLowers - 1, false}} {
		f := newExecutorFixture(t)
		f.options.ContainerImages = store
		f.options.Platform = PlatformOffer{ContainerImages: store.Check}
		for range tc.inputLayers - 1 {
			f.materializer.extraLayers = append(f.materializer.extraLayers, t.TempDir())
		}
		command := &remoteexecution.Command{
			Arguments: []string{"/bin/true"},
			Platform: &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{
				{Name: ContainerImageProperty, Value: "docker://example.org/two:1"},
			}},
		}
		response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{}, command), NoopObserver)
		if ran := len(f.runner.runs()) == 1; ran != tc.wantRun {
			t.Errorf("%d input layers + 2: ran %v, want %v (%v)", tc.inputLayers, ran, tc.wantRun, response.Status)
		}
		if tc.wantRun {
			if spec := f.runner.runs()[0]; len(spec.Mounts[0].Layers) != child.MaxLowers {
				t.Errorf("root mount of %d layers, want %d", len(spec.Mounts[0].Layers), child.MaxLowers)
			}
			continue
		}
		if code := codes.Code(response.Status.GetCode()); code != codes.FailedPrecondition || !strings.Contains(response.Status.GetMessage(), "501 lower layers") {
			t.Errorf("%d input layers + 2: %v %q, want FAILED_PRECONDITION naming 501 lower layers", tc.inputLayers, code, response.Status.GetMessage())
		}
	}
}
