package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// With enableActiveSpans in the diagnostics server's configuration,
// Buildbarn would serve its own diagnostics server (which has no status
// page): serve still serves the page there, next to /active_spans.
func TestServeWithActiveSpansStillHasTheStatusPage(t *testing.T) {
	configPath, diagnostics := serveConfigWithDiagnostics(t, "", `
      enableActiveSpans: true,`)
	s := startServer(t, "--config", configPath)
	s.client().run(action{args: sh("echo with-active-spans-marker")})
	base := "http://" + diagnostics
	if code, index := httpGet(t, base+"/status/"); code != http.StatusOK || !strings.Contains(index, "Recent actions") {
		t.Errorf("/status/ with active spans: %d\n%s", code, index)
	}
	if code, page := httpGet(t, base+"/status/actions/1"); code != http.StatusOK || !strings.Contains(page, "with-active-spans-marker") {
		t.Errorf("the action's page (%d) lacks its stdout", code)
	}
	// Buildbarn's page of active spans is served too (its template's
	// title), and so are the other endpoints.
	if code, page := httpGet(t, base+"/active_spans"); code != http.StatusOK || !strings.Contains(page, "Active OpenTelemetry spans") {
		t.Errorf("/active_spans: %d\n%s", code, page)
	}
	if code, _ := httpGet(t, base+"/-/healthy"); code != http.StatusOK {
		t.Errorf("/-/healthy: %d", code)
	}
	if _, metrics := httpGet(t, base+"/metrics"); !strings.Contains(metrics, "bitzel_executor_actions_completed_total") {
		t.Error("/metrics lacks the executor's metrics")
	}
}
