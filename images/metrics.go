package images

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics as layers's: package-level, registered with the default
// registry once a Store exists.
var (
	metricsOnce sync.Once

	layersExtracted = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "bitzel",
		Subsystem: "images",
		Name:      "layers_extracted_total",
		Help:      "Container image layers extracted into the data directory (each layer once).",
	})
	imagePlacements = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "bitzel",
		Subsystem: "images",
		Name:      "placements_total",
		Help:      "Actions given a container image's layers.",
	})
)

func registerMetrics() {
	metricsOnce.Do(func() {
		prometheus.MustRegister(layersExtracted, imagePlacements)
	})
}
