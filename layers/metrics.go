package layers

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics follow bb-storage's convention: package-level collectors,
// registered once on first use with the default registry. The
// subsystem stays "cas", the package they were first exported from,
// so that dashboards keep working.
var (
	metricsOnce sync.Once

	layerCacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "bitzel",
		Subsystem: "cas",
		Name:      "layer_cache_lookups_total",
		Help:      "Layer cache lookups, by result (hit or miss).",
	}, []string{"result"})
	layerCacheHits   = layerCacheLookups.WithLabelValues("hit")
	layerCacheMisses = layerCacheLookups.WithLabelValues("miss")

	layerCacheEvictions = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "bitzel",
		Subsystem: "cas",
		Name:      "layer_cache_evictions_total",
		Help:      "Layers removed from the layer cache to stay within its budget.",
	})
	layerCacheBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "bitzel",
		Subsystem: "cas",
		Name:      "layer_cache_bytes",
		Help:      "Bytes of file content held by published layers.",
	})

	fileCacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "bitzel",
		Subsystem: "cas",
		Name:      "file_cache_lookups_total",
		Help:      "File cache lookups, by result (hit, miss, or corrupt: left by a previous run with other content than its digest, dropped and fetched again).",
	}, []string{"result"})
	fileCacheHits    = fileCacheLookups.WithLabelValues("hit")
	fileCacheMisses  = fileCacheLookups.WithLabelValues("miss")
	fileCacheCorrupt = fileCacheLookups.WithLabelValues("corrupt")
)

func registerMetrics() {
	metricsOnce.Do(func() {
		prometheus.MustRegister(layerCacheLookups, layerCacheEvictions, layerCacheBytes, fileCacheLookups)
	})
}
