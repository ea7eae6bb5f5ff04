package statuspage

import (
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// cacheMetricPrefix selects what the caches and storage export
// (layers/metrics.go, storage/metrics.go).
// The page lists every such metric rather than a fixed set, so a metric
// a cache gains later shows without a change here.
const cacheMetricPrefix = "bitzel_cas_"

// CacheMetric is one cache figure for the page.
type CacheMetric struct {
	Name  string
	Help  string
	Value float64
	// Bytes says the value is a size, to be printed as one.
	Bytes bool
}

// HitRate is computed from a lookups counter with result="hit" and
// result="miss" series.
type HitRate struct {
	Cache        string
	Hits, Misses float64
}

// Rate is the fraction of lookups that hit, or -1 before any lookup.
func (h HitRate) Rate() float64 {
	if h.Hits+h.Misses == 0 {
		return -1
	}
	return h.Hits / (h.Hits + h.Misses)
}

// cacheFigures reads the caches' metrics from the gatherer. A gatherer
// error leaves out what it could not read: the page is still useful.
func cacheFigures(gatherer prometheus.Gatherer) ([]CacheMetric, []HitRate) {
	if gatherer == nil {
		return nil, nil
	}
	families, _ := gatherer.Gather()
	var metrics []CacheMetric
	var rates []HitRate
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, cacheMetricPrefix) {
			continue
		}
		short := strings.TrimPrefix(name, cacheMetricPrefix)
		if cache, ok := strings.CutSuffix(short, "_lookups_total"); ok {
			rate := HitRate{Cache: strings.ReplaceAll(cache, "_", " ")}
			for _, m := range f.GetMetric() {
				switch labelValue(m, "result") {
				case "hit":
					rate.Hits += metricValue(m)
				case "miss":
					rate.Misses += metricValue(m)
				}
			}
			rates = append(rates, rate)
			continue
		}
		var total float64
		for _, m := range f.GetMetric() {
			total += metricValue(m)
		}
		metrics = append(metrics, CacheMetric{
			Name:  strings.ReplaceAll(strings.TrimSuffix(short, "_total"), "_", " "),
			Help:  f.GetHelp(),
			Value: total,
			Bytes: strings.HasSuffix(short, "_bytes") || strings.HasSuffix(short, "_bytes_total"),
		})
	}
	sort.Slice(metrics, func(i, j int) bool { return metrics[i].Name < metrics[j].Name })
	sort.Slice(rates, func(i, j int) bool { return rates[i].Cache < rates[j].Cache })
	return metrics, rates
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}
