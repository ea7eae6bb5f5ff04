// Package statuspage is the status page of the diagnostics HTTP server:
// what runs now, recent actions with their timings, one action in
// detail, and plots of the last hour. It is read-only and needs no
// asset from outside the binary.
package statuspage

import (
	"embed"
	"html/template"
	"io/fs"
	"log"
	"net/http"
	"strconv"
	"time"

	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/prometheus/client_golang/prometheus"
)

// Prefix is where the page lives on the diagnostics server.
const Prefix = "/status/"

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Options say what the page reads.
type Options struct {
	Recorder *Recorder
	// ContentAddressableStorage holds the Actions, Commands, input
	// roots and logs the action view shows.
	ContentAddressableStorage blobstore.BlobAccess
	MaximumMessageSizeBytes   int
	// Gatherer supplies the caches' metrics (prometheus.DefaultGatherer).
	Gatherer prometheus.Gatherer
	// Slots is how many actions may run at once.
	Slots int
	// QueueLength returns how many actions wait for a slot; nil when
	// the queue is elsewhere (bb_scheduler's).
	QueueLength func() int
	// DataDirectory and DiskBudgetBytes: where the caches live and
	// how much they may use together.
	DataDirectory   string
	DiskBudgetBytes int64
	WorkerName      string
	// LogTailBytes is how much of stdout and stderr the action view
	// shows before linking to the whole blob.
	LogTailBytes int64
}

type handler struct {
	options   Options
	templates *template.Template
	mux       *http.ServeMux
}

// NewHandler returns the page's handler. Mount it at Prefix.
func NewHandler(options Options) http.Handler {
	if options.LogTailBytes <= 0 {
		options.LogTailBytes = 64 << 10
	}
	if options.MaximumMessageSizeBytes <= 0 {
		options.MaximumMessageSizeBytes = 4 << 20
	}
	h := &handler{
		options:   options,
		templates: template.Must(template.New("").Funcs(templateFunctions).ParseFS(templateFiles, "templates/*.html")),
		mux:       http.NewServeMux(),
	}
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		panic(err)
	}
	h.mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", http.FileServerFS(static)))
	h.mux.HandleFunc("GET "+Prefix+"{$}", h.serveIndex)
	h.mux.HandleFunc("GET "+Prefix+"actions/{id}", h.serveAction)
	h.mux.HandleFunc("GET "+Prefix+"actions/{id}/{log}", h.serveBlob)
	h.mux.HandleFunc("GET "+Prefix+"plots/rate.svg", h.serveRatePlot)
	h.mux.HandleFunc("GET "+Prefix+"plots/latency/{stage}", h.serveLatencyPlot)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The page shows command lines and environments: no other site
	// may frame it or read it, and no script but its own runs.
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

func (h *handler) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := h.templates.ExecuteTemplate(w, name, data); err != nil {
		// Headers are gone by now; the log says why the page
		// ended early.
		log.Printf("status page: %s: %v", name, err)
	}
}

func (h *handler) serveRatePlot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-store")
	writeRatePlot(w, h.options.Recorder.Series())
}

func (h *handler) serveLatencyPlot(w http.ResponseWriter, r *http.Request) {
	stage, err := strconv.Atoi(r.PathValue("stage"))
	if err != nil || stage < 0 || stage >= stageCount {
		http.Error(w, "unknown stage "+strconv.Quote(r.PathValue("stage"))+": want 0 to "+strconv.Itoa(stageCount-1), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-store")
	writeLatencyPlot(w, h.options.Recorder.Series(), stage)
}

func (h *handler) lookup(w http.ResponseWriter, r *http.Request) (*Record, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "invalid action id "+strconv.Quote(r.PathValue("id"))+": want a number", http.StatusBadRequest)
		return nil, false
	}
	record, ok := h.options.Recorder.Lookup(id)
	if !ok {
		http.Error(w, "action "+strconv.FormatUint(id, 10)+" is not known: it is older than the last "+
			strconv.Itoa(len(h.options.Recorder.recent.records))+" actions", http.StatusNotFound)
		return nil, false
	}
	return record, true
}

var templateFunctions = template.FuncMap{
	"duration": shortDuration,
	"bytes":    formatBytes,
	"shortHash": func(h string) string {
		if len(h) > 12 {
			return h[:12] + "…"
		}
		return h
	},
	"percent": func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + "%" },
	"since":   func(now, t time.Time) string { return shortDuration(now.Sub(t)) },
	"clock":   func(t time.Time) string { return t.Format("15:04:05") },
	"dict": func(pairs ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(pairs); i += 2 {
			m[pairs[i].(string)] = pairs[i+1]
		}
		return m
	},
}

func formatBytes(v any) string {
	var n float64
	switch x := v.(type) {
	case int64:
		n = float64(x)
	case uint64:
		n = float64(x)
	case int:
		n = float64(x)
	case float64:
		n = x
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatFloat(n, 'f', 0, 64) + " B"
	}
	return strconv.FormatFloat(n, 'f', 1, 64) + " " + units[i]
}
