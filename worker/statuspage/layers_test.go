package statuspage

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

func TestActionPageShowsWhichLayersWereCachedAndWhichBuilt(t *testing.T) {
	f := newPageFixture(t)
	function := digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)
	layerDigest := func(b byte) digest.Digest {
		d, err := function.NewDigest(strings.Repeat(string(rune('a'+b)), 64), int64(100+b))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	action := f.cas.putMessage(&remoteexecution.Action{CommandDigest: f.cas.putMessage(&remoteexecution.Command{Arguments: []string{"/bin/cc"}})})
	recording := f.recorder.ActionStarted(testRequest(t, action, nil))
	recording.StageChanged(worker.StageFetchingInputs)
	recording.InputLayersPlaced([]layers.LayerUse{
		{Path: ".", Digest: layerDigest(0), Files: 3, Bytes: 7, Built: true, Time: 1500 * time.Millisecond},
		{Path: "sysroot", Digest: layerDigest(1), Files: 40000, Bytes: 3 << 20},
	})
	id := f.recorder.Snapshot().Running[len(f.recorder.Snapshot().Running)-1].ID

	// While running, and once completed.
	for _, when := range []string{"running", "completed"} {
		if when == "completed" {
			recording.ActionCompleted(&remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{}})
		}
		code, body, _ := get(t, f.handler, fmt.Sprintf("/status/actions/%d", id))
		if code != http.StatusOK {
			t.Fatalf("%s: %d\n%s", when, code, body)
		}
		start := strings.Index(body, `<table id="layers">`)
		if start < 0 {
			t.Fatalf("%s: no layers table:\n%s", when, body)
		}
		table := body[start : start+strings.Index(body[start:], "</table>")]
		mustContain(t, when+": the layers table", table,
			`<tr class="layer-built"><td class="mono">.</td>`, "aaaaaaaaaaaa…", "<td class=\"num\">3</td>", "<td class=\"num\">7 B</td>", "<td>built</td>", "1.5s",
			`<tr class="layer-cached"><td class="mono">sysroot</td>`, "bbbbbbbbbbbb…", "40000", "3.0 MiB", "<td>cached</td>")
		mustContain(t, when+": the page", body, "Layers (2, 1 built by this action)")
	}
}
