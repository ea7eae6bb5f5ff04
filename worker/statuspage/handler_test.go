package statuspage

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/worker"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type pageFixture struct {
	cas      *memoryCAS
	recorder *Recorder
	handler  http.Handler
	stderr   string
}

// newPageFixture records three completed actions (a fast success, a
// slow failure with a long stderr, a cached result) and one running.
func newPageFixture(t *testing.T) *pageFixture {
	f := &pageFixture{cas: newMemoryCAS(), recorder: NewRecorder(100)}
	registry := prometheus.NewRegistry()
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bitzel_cas_layer_cache_lookups_total", Help: "h"}, []string{"result"})
	lookups.WithLabelValues("hit").Add(3)
	lookups.WithLabelValues("miss").Add(1)
	size := prometheus.NewGauge(prometheus.GaugeOpts{Name: "bitzel_cas_layer_cache_bytes", Help: "Bytes of layers."})
	size.Set(3 << 20)
	registry.MustRegister(lookups, size)
	f.handler = NewHandler(Options{
		Recorder: f.recorder, ContentAddressableStorage: f.cas, Gatherer: registry,
		Slots: 4, QueueLength: func() int { return 7 }, DataDirectory: t.TempDir(), DiskBudgetBytes: 1 << 30,
		LogTailBytes: 1000,
	})
	input := f.cas.putMessage(&remoteexecution.Directory{
		Directories: []*remoteexecution.DirectoryNode{{Name: "src", Digest: f.cas.putMessage(&remoteexecution.Directory{
			Files: []*remoteexecution.FileNode{{Name: "a.c", Digest: f.cas.put([]byte("int a;"))}, {Name: "b.c", Digest: f.cas.put([]byte("int b;"))}},
		})}},
	})
	newAction := func(argv ...string) *remoteexecution.Digest {
		command := f.cas.putMessage(&remoteexecution.Command{
			Arguments:            argv,
			EnvironmentVariables: []*remoteexecution.Command_EnvironmentVariable{{Name: "PATH", Value: "/usr/bin:/bin"}},
			WorkingDirectory:     "pkg",
		})
		return f.cas.putMessage(&remoteexecution.Action{CommandDigest: command, InputRootDigest: input})
	}
	now := time.Now()
	complete := func(d *remoteexecution.Digest, invocation, target string, response *remoteexecution.ExecuteResponse) {
		metadata := &remoteexecution.RequestMetadata{ToolInvocationId: invocation, TargetId: target, ActionMnemonic: "CppCompile"}
		f.recorder.ActionStarted(testRequest(t, d, metadata)).ActionCompleted(response)
	}
	complete(newAction("/bin/true"), "inv-one", "//fast:ok", &remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{
		StdoutDigest:      f.cas.put([]byte("all good\n")),
		ExecutionMetadata: metadataTaking(now, time.Millisecond, time.Millisecond, 10*time.Millisecond, time.Millisecond),
	}})
	f.stderr = "error: " + strings.Repeat("x", 1500) + " THE END"
	complete(newAction("/bin/sh", "-c", "exit 3"), "inv-two", "//slow:broken", &remoteexecution.ExecuteResponse{Result: &remoteexecution.ActionResult{
		ExitCode:          3,
		StderrDigest:      f.cas.put([]byte(f.stderr)),
		ExecutionMetadata: metadataTaking(now, time.Millisecond, 2*time.Second, 5*time.Second, time.Millisecond),
	}})
	complete(newAction("/bin/cached"), "inv-one", "//fast:cached", &remoteexecution.ExecuteResponse{CachedResult: true, Result: &remoteexecution.ActionResult{}})
	complete(newAction("/bin/sleep", "100"), "inv-two", "//slow:timeout", &remoteexecution.ExecuteResponse{
		Status: status.New(codes.DeadlineExceeded, "Action timed out after 1s").Proto(),
		Result: &remoteexecution.ActionResult{ExitCode: 137, ExecutionMetadata: metadataTaking(now, 0, 0, time.Second, 0)},
	})
	running := f.recorder.ActionStarted(testRequest(t, newAction("/bin/sleep", "1"), &remoteexecution.RequestMetadata{TargetId: "//now:running"}))
	running.StageChanged(worker.StageRunning)
	return f
}

func TestIndexShowsNowRunningAndRecentActions(t *testing.T) {
	f := newPageFixture(t)
	code, body, header := get(t, f.handler, "/status/")
	if code != http.StatusOK {
		t.Fatalf("GET /status/: %d\n%s", code, body)
	}
	if csp := header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	mustContain(t, "the index", body,
		`<div class="value" id="busy">1 / 4</div>`, `<div class="value" id="queue">7</div>`,
		"//now:running", "<td>running</td>",
		"layer cache hit rate (3 hits, 1 misses)", "75.0%", "3.0 MiB", "layer cache bytes",
		"//fast:ok", "//slow:broken", "//fast:cached", "//slow:timeout",
		`outcome-failed">failed (3)`, `outcome-cached">cached`, `outcome-timeout">timeout`,
		"25.0%", // one of the four served from the Action Cache
		`<rect class="seg-2"`, "/status/plots/rate.svg", "/status/plots/latency/3")
}

func TestIndexFiltersByOutcomeAndInvocationAndSortsByDuration(t *testing.T) {
	f := newPageFixture(t)
	_, body, _ := get(t, f.handler, "/status/?outcome=failed")
	recent := body[strings.Index(body, `id="recent"`):]
	mustContain(t, "failed only", recent, "//slow:broken")
	for _, absent := range []string{"//fast:ok", "//fast:cached", "//slow:timeout"} {
		if strings.Contains(recent, absent) {
			t.Errorf("outcome=failed lists %s", absent)
		}
	}
	_, body, _ = get(t, f.handler, "/status/?outcome=problems")
	recent = body[strings.Index(body, `id="recent"`):]
	if !strings.Contains(recent, "//slow:broken") || !strings.Contains(recent, "//slow:timeout") || strings.Contains(recent, "//fast:") {
		t.Errorf("outcome=problems should list the failure and the timeout only:\n%s", recent)
	}
	_, body, _ = get(t, f.handler, "/status/?invocation=inv-one")
	recent = body[strings.Index(body, `id="recent"`):]
	if !strings.Contains(recent, "//fast:ok") || strings.Contains(recent, "//slow:") {
		t.Errorf("invocation=inv-one should list its actions only:\n%s", recent)
	}
	_, body, _ = get(t, f.handler, "/status/?sort=duration")
	recent = body[strings.Index(body, `id="recent"`):]
	if a, b := strings.Index(recent, "//slow:broken"), strings.Index(recent, "//fast:ok"); a < 0 || b < 0 || a > b {
		t.Errorf("sort=duration does not put the 7 s action before the 13 ms one:\n%s", recent)
	}
	_, body, _ = get(t, f.handler, "/status/")
	recent = body[strings.Index(body, `id="recent"`):]
	if a, b := strings.Index(recent, "//slow:timeout"), strings.Index(recent, "//fast:ok"); a < 0 || b < 0 || a > b {
		t.Errorf("by default the newest action is not first:\n%s", recent)
	}
}

func TestActionViewShowsCommandInputsAndTruncatedStderrWithADownload(t *testing.T) {
	f := newPageFixture(t)
	code, body, _ := get(t, f.handler, "/status/actions/2")
	if code != http.StatusOK {
		t.Fatalf("GET /status/actions/2: %d\n%s", code, body)
	}
	mustContain(t, "the failed action's page", body,
		"exit code 3", "/bin/sh\n-c\nexit 3\n", "PATH", "/usr/bin:/bin", "pkg",
		"2 files, 12 B in 2 directories", "src/",
		"//slow:broken", "CppCompile", "inv-two",
		"remotetool --operation=show_action", "/status/actions/2/action",
		"error: xxx", "Truncated.", `href="/status/actions/2/stderr"`)
	if strings.Contains(body, "THE END") {
		t.Error("the action page shows all of a stderr longer than its limit")
	}
	code, blob, header := get(t, f.handler, "/status/actions/2/stderr")
	if code != http.StatusOK || blob != f.stderr {
		t.Fatalf("GET stderr: %d, %d bytes, want the whole %d-byte blob", code, len(blob), len(f.stderr))
	}
	if !strings.HasPrefix(header.Get("Content-Disposition"), "attachment") {
		t.Errorf("stderr download: Content-Disposition %q", header.Get("Content-Disposition"))
	}
	code, action, _ := get(t, f.handler, "/status/actions/2/action")
	if r, _ := f.recorder.Lookup(2); code != http.StatusOK || int64(len(action)) != r.ActionDigest.GetSizeBytes() {
		t.Errorf("GET action: %d, %d bytes", code, len(action))
	}
	_, body, _ = get(t, f.handler, "/status/actions/5")
	mustContain(t, "the running action's page", body, "running", "/bin/sleep\n1\n")
}

func TestBadRequestsGetClearErrors(t *testing.T) {
	f := newPageFixture(t)
	for _, c := range []struct {
		url  string
		code int
		want string
	}{
		{"/status/actions/x", http.StatusBadRequest, `invalid action id "x"`},
		{"/status/actions/999", http.StatusNotFound, "action 999 is not known"},
		{"/status/actions/1/stdin", http.StatusNotFound, `unknown blob "stdin"`},
		{"/status/actions/1/stderr", http.StatusNotFound, "action 1 has no stderr"},
		{"/status/actions/5/stdout", http.StatusNotFound, "has no stdout"},
		{"/status/plots/latency/9", http.StatusNotFound, `unknown stage "9"`},
	} {
		code, body, _ := get(t, f.handler, c.url)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("GET %s: %d %q, want %d with %q", c.url, code, body, c.code, c.want)
		}
	}
	// A log the CAS no longer has: said on the page, not a failure.
	for hash := range f.cas.blobs {
		if string(f.cas.blobs[hash]) == f.stderr {
			delete(f.cas.blobs, hash)
		}
	}
	_, body, _ := get(t, f.handler, "/status/actions/2")
	mustContain(t, "an action whose stderr is gone", body, "Could not read it from the CAS", "not found")
	if code, body, _ := get(t, f.handler, "/status/actions/2/stderr"); code != http.StatusBadGateway {
		t.Errorf("download of a missing blob: %d %q, want 502", code, body)
	}
}

func TestPlotsAreWellFormedSVG(t *testing.T) {
	f := newPageFixture(t)
	for i := -1; i < stageCount; i++ {
		url := "/status/plots/rate.svg"
		if i >= 0 {
			url = fmt.Sprint("/status/plots/latency/", i)
		}
		code, body, header := get(t, f.handler, url)
		if code != http.StatusOK || header.Get("Content-Type") != "image/svg+xml" {
			t.Fatalf("GET %s: %d %s", url, code, header.Get("Content-Type"))
		}
		decoder := xml.NewDecoder(strings.NewReader(body))
		for {
			_, err := decoder.Token()
			if err != nil {
				if err.Error() != "EOF" {
					t.Fatalf("%s is not well-formed: %v\n%s", url, err, body)
				}
				break
			}
		}
		if !strings.Contains(body, "<path ") {
			t.Errorf("%s draws no line:\n%s", url, body)
		}
	}
}

func TestStaticAssetsAreEmbedded(t *testing.T) {
	f := newPageFixture(t)
	for _, name := range []string{"style.css", "page.js", "favicon.svg"} {
		if code, body, _ := get(t, f.handler, "/status/static/"+name); code != http.StatusOK || len(body) < 100 {
			t.Errorf("GET /status/static/%s: %d, %d bytes", name, code, len(body))
		}
	}
}
