package main

import (
	"log"
	"net/http"
	"reflect"
	"unsafe"

	"github.com/buildbarn/bb-storage/pkg/global"
	bb_otel "github.com/buildbarn/bb-storage/pkg/otel"
)

// lifecycleStateActiveSpansField is where bb-storage's LifecycleState
// keeps the handler that collects the process's active spans.
const lifecycleStateActiveSpansField = "activeSpansReportingHTTPHandler"

// activeSpansHandler returns the /active_spans page of the spans
// bb-storage collects. bb-storage serves it only from its own
// diagnostics server, whose routes cannot be extended, and keeps the
// handler unexported. Making a second collector instead would miss the
// gRPC clients' spans: their instrumentation captures the tracer
// provider while global.ApplyConfiguration runs. So the handler is read
// from the LifecycleState, type-checked: a bb-storage that renames or
// retypes the field makes the page say so rather than crash, and
// TestActiveSpansHandlerIsFoundInBBStoragesLifecycleState fails on
// that upgrade.
func activeSpansHandler(lifecycleState *global.LifecycleState) http.Handler {
	if h := lifecycleStateActiveSpans(lifecycleState); h != nil {
		return h
	}
	log.Printf("enableActiveSpans: this build's bb-storage keeps its active spans where bitzel-worker cannot find them; /active_spans is unavailable")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "active spans are collected, but this build cannot reach bb-storage's page of them (see the log)", http.StatusNotImplemented)
	})
}

func lifecycleStateActiveSpans(lifecycleState *global.LifecycleState) *bb_otel.ActiveSpansReportingHTTPHandler {
	if lifecycleState == nil {
		return nil
	}
	field := reflect.ValueOf(lifecycleState).Elem().FieldByName(lifecycleStateActiveSpansField)
	want := reflect.TypeOf((*bb_otel.ActiveSpansReportingHTTPHandler)(nil))
	if !field.IsValid() || field.Type() != want {
		return nil
	}
	// An unexported field can be read only through its address.
	h := reflect.NewAt(want, unsafe.Pointer(field.UnsafeAddr())).Elem().Interface().(*bb_otel.ActiveSpansReportingHTTPHandler)
	return h
}
