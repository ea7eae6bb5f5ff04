package statuspage

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Plots are drawn here as SVG rather than by a script in the browser:
// no asset to vendor, nothing to run client-side, and the binary grows
// by this file only.

const (
	plotWidth, plotHeight = 560, 140
	plotLeft, plotBottom  = 56, 22
	plotTop, plotRight    = 8, 8
)

type line struct {
	label  string
	color  string
	points []float64 // NaN: no value
}

// writePlot draws lines over the hour's intervals; logScale plots
// durations in seconds on a logarithmic axis.
func writePlot(w io.Writer, title string, intervals []Interval, lines []line, logScale bool, unit func(float64) string) {
	innerW := float64(plotWidth - plotLeft - plotRight)
	innerH := float64(plotHeight - plotTop - plotBottom)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, l := range lines {
		for _, v := range l.points {
			if !math.IsNaN(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0, 1
	}
	scale := func(v float64) float64 { return v }
	if logScale {
		lo, hi = math.Max(lo, 1e-4), math.Max(hi, 1e-4)
		lo = math.Pow(10, math.Floor(math.Log10(lo)))
		hi = math.Pow(10, math.Ceil(math.Log10(hi)))
		if hi <= lo {
			hi = lo * 10
		}
		scale = func(v float64) float64 { return math.Log10(math.Max(v, 1e-4)) }
	} else {
		lo = 0
		if hi <= 0 {
			hi = 1
		}
		hi *= 1.1
	}
	y := func(v float64) float64 {
		return float64(plotTop) + innerH*(1-(scale(v)-scale(lo))/(scale(hi)-scale(lo)))
	}
	x := func(i int) float64 {
		if len(intervals) < 2 {
			return float64(plotLeft)
		}
		return float64(plotLeft) + innerW*float64(i)/float64(len(intervals)-1)
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		plotWidth, plotHeight, plotWidth, plotHeight, escapeXML(title))
	// Attributes rather than a <style> element: the page's Content
	// Security Policy allows no inline style.
	fmt.Fprint(w, `<g font-family="sans-serif" font-size="11" fill="#555">`)
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="#fcfcfc" stroke="#999"/>`, plotLeft, plotTop, innerW, innerH)
	for _, v := range []float64{lo, hi} {
		fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, plotLeft-4, y(v)+4, escapeXML(unit(v)))
	}
	if logScale {
		for v := lo * 10; v < hi; v *= 10 {
			fmt.Fprintf(w, `<line stroke="#ddd" x1="%d" x2="%.0f" y1="%.1f" y2="%.1f"/>`, plotLeft, float64(plotLeft)+innerW, y(v), y(v))
			fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, plotLeft-4, y(v)+4, escapeXML(unit(v)))
		}
	}
	if len(intervals) > 0 {
		fmt.Fprintf(w, `<text x="%d" y="%d">%s</text>`, plotLeft, plotHeight-6, intervals[0].Start.Format("15:04"))
		fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="end">now</text>`, plotWidth-plotRight, plotHeight-6)
	}
	legendX := plotLeft + 60
	for _, l := range lines {
		var path strings.Builder
		pen := "M"
		for i, v := range l.points {
			if math.IsNaN(v) {
				pen = "M"
				continue
			}
			fmt.Fprintf(&path, "%s%.1f %.1f ", pen, x(i), y(v))
			pen = "L"
			if isolated(l.points, i) {
				// A lone interval has no line to be part of.
				fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`, x(i), y(v), l.color)
			}
		}
		if path.Len() > 0 {
			fmt.Fprintf(w, `<path d="%s" fill="none" stroke="%s" stroke-width="1.5"/>`, strings.TrimSpace(path.String()), l.color)
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" fill="%s">%s</text>`, legendX, plotHeight-6, l.color, escapeXML(l.label))
		legendX += 12 + 7*len(l.label)
	}
	fmt.Fprint(w, `</g></svg>`)
}

func isolated(points []float64, i int) bool {
	before := i > 0 && !math.IsNaN(points[i-1])
	after := i+1 < len(points) && !math.IsNaN(points[i+1])
	return !before && !after
}

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// writeRatePlot draws actions completed per second.
func writeRatePlot(w io.Writer, intervals []Interval) {
	points := make([]float64, len(intervals))
	for i, iv := range intervals {
		points[i] = float64(iv.Completed) / intervalLength.Seconds()
	}
	writePlot(w, "actions per second", intervals, []line{{label: "actions/s", color: "#2a6fdb", points: points}}, false,
		func(v float64) string { return fmt.Sprintf("%.2g/s", v) })
}

// writeLatencyPlot draws the percentiles of one stage's latency.
func writeLatencyPlot(w io.Writer, intervals []Interval, stage int) {
	var lines []line
	for _, p := range []struct {
		label string
		q     float64
		color string
	}{{"p50", 0.5, "#2a9d4b"}, {"p90", 0.9, "#e0a100"}, {"p99", 0.99, "#d1342f"}} {
		points := make([]float64, len(intervals))
		for i := range intervals {
			points[i] = math.NaN()
			if d, ok := intervals[i].Percentile(stage, p.q); ok {
				points[i] = d.Seconds()
			}
		}
		lines = append(lines, line{label: p.label, color: p.color, points: points})
	}
	writePlot(w, stageNames[stage]+" latency", intervals, lines, true, func(v float64) string {
		return shortDuration(time.Duration(v * float64(time.Second)))
	})
}

// shortDuration prints a duration with two or three significant digits.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	case d < time.Minute:
		return fmt.Sprintf("%.3gs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
