package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/buildbarn/bb-storage/pkg/global"
	"github.com/buildbarn/bb-storage/pkg/program"
	globalpb "github.com/buildbarn/bb-storage/pkg/proto/configuration/global"
	"go.opentelemetry.io/otel"
)

// With enableActiveSpans, the configuration given to bb-storage keeps
// span collection on but no server of its own, and the handler that
// shows the spans is the one bb-storage collects them into: a span
// started through the global tracer provider (as bb-storage's gRPC
// client instrumentation starts them) is on the page.
func TestActiveSpansHandlerIsFoundInBBStoragesLifecycleState(t *testing.T) {
	configured := &globalpb.Configuration{DiagnosticsHttpServer: &globalpb.DiagnosticsHTTPServerConfiguration{
		EnableActiveSpans: true,
		EnablePrometheus:  true,
	}}
	applied, diagnostics := takeOverDiagnostics(configured)
	if diagnostics != configured.DiagnosticsHttpServer {
		t.Fatal("the diagnostics server was not taken over")
	}
	if d := applied.GetDiagnosticsHttpServer(); !d.GetEnableActiveSpans() || len(d.GetHttpServers()) != 0 {
		t.Fatalf("bb-storage is given diagnostics %v, want active spans on and no server", d)
	}
	err := program.RunLocal(context.Background(), func(ctx context.Context, siblingsGroup, dependenciesGroup program.Group) error {
		lifecycleState, _, err := global.ApplyConfiguration(applied, dependenciesGroup)
		if err != nil {
			return err
		}
		if lifecycleStateActiveSpans(lifecycleState) == nil {
			t.Fatalf("bb-storage's LifecycleState has no %s of the expected type: update activeSpansHandler for this bb-storage", lifecycleStateActiveSpansField)
		}
		_, span := otel.Tracer("bitzel-test").Start(ctx, "a-span-still-running")
		defer span.End()
		w := httptest.NewRecorder()
		activeSpansHandler(lifecycleState).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/active_spans", nil))
		if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "a-span-still-running") {
			t.Errorf("/active_spans (%d) does not show the running span:\n%s", w.Code, w.Body.String())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestActiveSpansHandlerSaysWhenItCannotReachTheSpans(t *testing.T) {
	w := httptest.NewRecorder()
	activeSpansHandler(nil).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/active_spans", nil))
	if w.Code != http.StatusNotImplemented {
		t.Errorf("without bb-storage's handler: %d, want 501", w.Code)
	}
}
