package storage

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics follow bb-storage's convention: package-level collectors,
// registered once on first use with the default registry. The
// subsystem stays "cas", the package these counters were first
// exported from, so that dashboards keep working.
var (
	metricsOnce sync.Once

	bytesFetched = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "bitzel",
		Subsystem: "cas",
		Name:      "fetched_bytes_total",
		Help:      "Bytes of blobs read from the CAS.",
	})
	bytesUploaded = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "bitzel",
		Subsystem: "cas",
		Name:      "uploaded_bytes_total",
		Help:      "Bytes of blobs written to the CAS.",
	})
)

func registerMetrics() {
	metricsOnce.Do(func() {
		prometheus.MustRegister(bytesFetched, bytesUploaded)
	})
}

func addBytesFetched(n int)  { bytesFetched.Add(float64(n)) }
func addBytesUploaded(n int) { bytesUploaded.Add(float64(n)) }
