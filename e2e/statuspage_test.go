package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/chromedp/chromedp"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// executeAs runs an action with the RequestMetadata Bazel attaches to
// its calls. It returns errors rather than failing the test: callers
// run it on goroutines of their own.
func (c *client) executeAs(actionDigest *remoteexecution.Digest, target string, invocation string) (*remoteexecution.ExecuteResponse, error) {
	data, err := proto.Marshal(&remoteexecution.RequestMetadata{
		ToolDetails:      &remoteexecution.ToolDetails{ToolName: "bazel", ToolVersion: "4.2.3"},
		ActionId:         "id-" + target,
		ToolInvocationId: invocation,
		TargetId:         target,
		ActionMnemonic:   "Genrule",
	})
	if err != nil {
		return nil, err
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "build.bazel.remote.execution.v2.requestmetadata-bin", string(data))
	return c.tryExecute(ctx, actionDigest, false)
}

// chromium is Debian's (apt-get install chromium).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	t.Fatal("chromium is not installed: the status page's browser test needs it (apt-get install chromium; scripts/test.sh installs it)")
	return ""
}

// browser starts headless chromium and collects every console error
// or warning, uncaught exception and failed load of the page (the
// browser log has those) for the test to fail on.
func browser(t *testing.T) (context.Context, func() []string) {
	profile := t.TempDir()
	options := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(profile),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 1000),
	)
	if os.Geteuid() == 0 {
		// Chromium refuses to run as root with its sandbox.
		options = append(options, chromedp.NoSandbox)
	}
	allocator, cancelAllocator := chromedp.NewExecAllocator(context.Background(), options...)
	ctx, cancelBrowser := chromedp.NewContext(allocator)
	// Started here, so that the console is read from the first page on.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		cancelBrowser()
		cancelAllocator()
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleError, chromedp.ConsoleWarning, chromedp.ConsoleException:
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancelBrowser()
		cancelAllocator()
		<-done
	})
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), problems...)
	}
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// text returns the text of the element that a CSS selector names.
func text(t *testing.T, ctx context.Context, selector string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(selector)))
	if err != nil {
		t.Fatalf("text of %s: %v", selector, err)
	}
	return s
}

// The status page in a real browser while actions run: the running
// ones are listed, live refresh brings in actions that complete, and a
// failed action leads to its stderr. Screenshots are kept (their path
// is logged) for a person to look at.
// Long on purpose: one scenario whose steps build on each other (each
// needs the state the previous left), read top to bottom.
func TestStatusPageInABrowserWhileActionsRun(t *testing.T) {
	s := startServer(t, "--concurrency", "2")
	c := s.client()
	ctx, problems := browser(t)
	shots, err := os.MkdirTemp("", "bitzel-statuspage-screenshots-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(shots, 0o755)
	t.Logf("screenshots in %s", shots)

	input := c.tree(map[string]entry{"src/main.c": {content: "int main(void) { return 0; }\n"}, "src/lib.h": {content: "#pragma once\n"}})
	run := func(args []string, target string) (chan error, *remoteexecution.Digest) {
		d := c.newAction(action{args: args, input: input, env: map[string]string{"PATH": "/usr/bin:/bin", "RUN": fmt.Sprint(time.Now().UnixNano())}})
		done := make(chan error, 1)
		go func() {
			_, err := c.executeAs(d, target, "invocation-browser-test")
			done <- err
		}()
		return done, d
	}
	okDigest := c.newAction(action{args: []string{"/bin/sh", "-c", "echo built"}, input: input, env: map[string]string{"PATH": "/usr/bin:/bin"}})
	if _, err := c.executeAs(okDigest, "//app:ok", "invocation-browser-test"); err != nil {
		t.Fatal(err)
	}
	// A second time: served from the Action Cache.
	if _, err := c.executeAs(okDigest, "//app:ok", "invocation-browser-test"); err != nil {
		t.Fatal(err)
	}
	failed, _ := run([]string{"/bin/sh", "-c", "echo compiling >&2; echo 'src/main.c:1: error: boom-marker' >&2; exit 3"}, "//app:broken")
	if err := <-failed; err != nil {
		t.Fatal(err)
	}
	// Two slow actions take both slots while the page is open.
	slowA, _ := run([]string{"/bin/sleep", "4"}, "//slow:a")
	slowB, _ := run([]string{"/bin/sleep", "4"}, "//slow:b")
	base := "http://" + s.metricsAddr
	waitUntil(t, "both slow actions to run", func() bool {
		_, body := httpGet(t, base+"/status/")
		return strings.Contains(body, `id="busy">2 / 2`) && strings.Contains(body, "//slow:b") && strings.Contains(body, "<td>running</td>")
	})

	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"), // redirects to /status/
		chromedp.WaitVisible(chromedp.ID("running")),
	); err != nil {
		t.Fatalf("load the page: %v", err)
	}
	busy, runningTable := text(t, ctx, "#busy"), text(t, ctx, "#running")
	if busy != "2 / 2" || !strings.Contains(runningTable, "//slow:a") || !strings.Contains(runningTable, "running") {
		t.Errorf("while two actions run: busy %q, running table %q", busy, runningTable)
	}
	screenshot(t, ctx, shots, "1-running.png")

	// Live refresh: the slow actions complete and show up without a
	// reload.
	for _, done := range []chan error{slowA, slowB} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = chromedp.Do(waitCtx, chromedp.WaitVisible(chromedp.Search(`//table[@id="recent"]//td[text()="//slow:b"]`)))
	cancel()
	if err != nil {
		t.Fatalf("the page did not refresh to show the completed slow actions: %v", err)
	}
	screenshot(t, ctx, shots, "2-recent.png")

	// Follow the failed action from the problems filter to its stderr.
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`select[name="outcome"]`), "problems"),
		chromedp.Click(chromedp.CSS(`form.filters button`)),
		// The attribute, unlike the value SetValue changed, is only
		// on the page the form loads: this waits for that page.
		chromedp.WaitReady(chromedp.CSS(`select[name="outcome"] option[value="problems"][selected]`)),
		chromedp.WaitVisible(chromedp.CSS(`#recent tr.row-failed`)),
	); err != nil {
		t.Fatalf("filter the failed actions: %v", err)
	}
	links, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(`#recent tr td a`)))
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 {
		t.Fatalf("the problems filter lists %d actions, want the one that failed", len(links))
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#recent tr.row-failed td a`)),
		chromedp.WaitVisible(chromedp.ID("stderr")),
	); err != nil {
		t.Fatalf("follow the failed action: %v", err)
	}
	outcome, stderr, argv := text(t, ctx, "#outcome"), text(t, ctx, "#stderr"), text(t, ctx, "#argv")
	if !strings.Contains(outcome, "exit code 3") || !strings.Contains(stderr, "boom-marker") || !strings.Contains(argv, "exit 3") {
		t.Errorf("failed action page: outcome %q, stderr %q, argv %q", outcome, stderr, argv)
	}
	// Which input layers the action was placed from, and whether it
	// found them cached or built them.
	if layers := text(t, ctx, "#layers"); !strings.Contains(layers, "placed from") || !(strings.Contains(layers, "built") || strings.Contains(layers, "cached")) {
		t.Errorf("failed action page: layers table %q", layers)
	}
	screenshot(t, ctx, shots, "3-failed-action.png")

	// What the page said must match what the client was told, and the
	// request metadata must have come through.
	_, body := httpGet(t, base+"/status/?invocation=invocation-browser-test")
	for _, want := range []string{"//app:ok", "//app:broken", "//slow:a", "Genrule", `outcome-cached">cached`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	// One more refresh period, then no console error may have
	// appeared on any page.
	time.Sleep(2500 * time.Millisecond)
	if p := problems(); len(p) > 0 {
		t.Errorf("the browser reported:\n%s", strings.Join(p, "\n"))
	}
}

// The cluster worker serves the page on the diagnostics server that its
// Buildbarn configuration describes, labels actions with the
// RequestMetadata the scheduler forwards, and shows logs read from the
// cluster's CAS.
func TestClusterWorkerServesTheStatusPage(t *testing.T) {
	storage := startServer(t)
	c := storage.client()
	d, schedulerAddress := startSchedulerDouble(t)
	workerID := map[string]string{"test": "status-page"}
	w := startClusterWorker(t, storage.address, schedulerAddress, workerID)
	waitForStage(t, d, workerID, "idle")
	actionDigest := c.newAction(action{
		args:     sh(`echo from-the-cluster-marker >&2; exit 4`),
		platform: map[string]string{"OSFamily": "linux"},
	})
	task := clusterTask(t, c, actionDigest)
	forwarded, err := anypb.New(&remoteexecution.RequestMetadata{ToolInvocationId: "cluster-invocation", TargetId: "//cluster:target", ActionMnemonic: "Genrule"})
	if err != nil {
		t.Fatal(err)
	}
	task.Auxiliary = []*anypb.Any{forwarded}
	d.Enqueue(task)
	if response := waitForCompletion(t, d, actionDigest); response.Result.GetExitCode() != 4 {
		t.Fatalf("completed with %v", response)
	}
	base := "http://" + w.metricsAddr
	// The worker has reported completion before its own recording
	// is certain to be visible: both happen once Execute returns.
	var index string
	waitUntil(t, "the page to list the action", func() bool {
		_, index = httpGet(t, base+"/status/")
		return strings.Contains(index, "//cluster:target")
	})
	for _, want := range []string{`id="busy">0 / 1`, "queue: at the scheduler", `outcome-failed">failed (4)`, "cluster-invocation"[:8]} {
		if !strings.Contains(index, want) {
			t.Errorf("the worker's page lacks %q", want)
		}
	}
	code, page := httpGet(t, base+"/status/actions/1")
	if code != http.StatusOK || !strings.Contains(page, "from-the-cluster-marker") || !strings.Contains(page, "//cluster:target") {
		t.Errorf("the action's page (%d) lacks its stderr or target:\n%s", code, page)
	}
	// Buildbarn's endpoints are still there.
	if code, _ := httpGet(t, base+"/-/healthy"); code != http.StatusOK {
		t.Errorf("/-/healthy: %d", code)
	}
	if _, metrics := httpGet(t, base+"/metrics"); !strings.Contains(metrics, "bitzel_cluster_slots 1") {
		t.Error("/metrics lacks the worker's metrics")
	}
}

// serve with a Buildbarn diagnostics server in its configuration file
// serves the page there, with the ring size the file gives.
func TestServeConfigurationFileDiagnosticsServerHasTheStatusPage(t *testing.T) {
	configPath, diagnostics := serveConfigWithDiagnostics(t, `
  statusPageRecentActions: 2,`, "")
	s := startServer(t, "--config", configPath)
	c := s.client()
	for i := range 3 {
		c.run(action{args: sh(fmt.Sprintf("echo run-%d", i))})
	}
	base := "http://" + diagnostics
	code, index := httpGet(t, base+"/status/")
	if code != http.StatusOK || !strings.Contains(index, "2 shown of 2 matching, 2 kept.") {
		t.Errorf("/status/ (%d) does not keep the configured 2 actions:\n%s", code, index)
	}
	if code, _ := httpGet(t, base+"/status/actions/1"); code != http.StatusNotFound {
		t.Errorf("the oldest of 3 actions with a ring of 2: %d, want 404", code)
	}
	if code, page := httpGet(t, base+"/status/actions/3"); code != http.StatusOK || !strings.Contains(page, "run-2") {
		t.Errorf("the newest action's page (%d) lacks its stdout", code)
	}
	if code, _ := httpGet(t, base+"/-/healthy"); code != http.StatusOK {
		t.Errorf("/-/healthy: %d", code)
	}
	if _, metrics := httpGet(t, base+"/metrics"); !strings.Contains(metrics, "bitzel_executor_actions_completed_total") {
		t.Error("/metrics lacks the executor's metrics")
	}
}
