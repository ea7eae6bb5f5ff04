package main

import (
	"net/http"

	"github.com/bitzel/bitzel-worker/worker/statuspage"
	"github.com/buildbarn/bb-storage/pkg/global"
	bb_grpc "github.com/buildbarn/bb-storage/pkg/grpc"
	http_server "github.com/buildbarn/bb-storage/pkg/http/server"
	"github.com/buildbarn/bb-storage/pkg/program"
	globalpb "github.com/buildbarn/bb-storage/pkg/proto/configuration/global"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/proto"
)

// recentActions is the status page's ring size: configured, or the
// default.
func recentActions(configured uint32) int {
	if configured == 0 {
		return statuspage.DefaultRecentActions
	}
	return int(configured)
}

// addStatusPage serves the page at /status/, and / sends a browser
// there: it is what a person opening the diagnostics port wants.
func addStatusPage(mux *http.ServeMux, page http.Handler) {
	mux.Handle(statuspage.Prefix, page)
	mux.Handle("GET /{$}", http.RedirectHandler(statuspage.Prefix, http.StatusFound))
}

// takeOverDiagnostics returns the global configuration without its
// diagnostics HTTP servers, and that server's configuration, so that
// serveDiagnostics can stand in for it. Buildbarn's server has a fixed
// set of routes; the status page needs one more on the same port and
// behind the same authentication policies. With active spans enabled,
// the configuration keeps a diagnostics server that listens nowhere but
// still enables them: bb-storage then sets up span collection (the
// tracer provider, the gRPC clients' instrumentation) exactly as it
// would, and serveDiagnostics serves its /active_spans page.
func takeOverDiagnostics(c *globalpb.Configuration) (*globalpb.Configuration, *globalpb.DiagnosticsHTTPServerConfiguration) {
	diagnostics := c.GetDiagnosticsHttpServer()
	if diagnostics == nil {
		return c, nil
	}
	c = proto.Clone(c).(*globalpb.Configuration)
	c.DiagnosticsHttpServer = nil
	if diagnostics.EnableActiveSpans {
		c.DiagnosticsHttpServer = &globalpb.DiagnosticsHTTPServerConfiguration{EnableActiveSpans: true}
	}
	return c, diagnostics
}

// serveDiagnostics serves what Buildbarn's diagnostics server does
// (/-/healthy, /metrics, /debug/pprof/ and /active_spans as configured)
// and the status page, on the configured HTTP servers. Like Buildbarn's,
// it is started once the program is ready, so that /-/healthy means
// ready. lifecycleState is what global.ApplyConfiguration returned for
// the configuration takeOverDiagnostics gave.
func serveDiagnostics(c *globalpb.DiagnosticsHTTPServerConfiguration, lifecycleState *global.LifecycleState, page http.Handler, group program.Group, grpcClientFactory bb_grpc.ClientFactory) {
	mux := http.NewServeMux()
	mux.HandleFunc("/-/healthy", func(http.ResponseWriter, *http.Request) {})
	if c.EnablePrometheus {
		mux.Handle("/metrics", promhttp.Handler())
	}
	if c.EnablePprof {
		// net/http/pprof registers on the default mux (bb-storage's
		// global package imports it).
		mux.Handle("/debug/pprof/", http.DefaultServeMux)
	}
	if c.EnableActiveSpans {
		mux.Handle("/active_spans", activeSpansHandler(lifecycleState))
	}
	addStatusPage(mux, page)
	http_server.NewServersFromConfigurationAndServe(c.HttpServers, http_server.NewMetricsHandler(mux, "Diagnostics"), group, grpcClientFactory)
}

// statusPageGatherer is where the page reads the caches' metrics.
var statusPageGatherer prometheus.Gatherer = prometheus.DefaultGatherer
