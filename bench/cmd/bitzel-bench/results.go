package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// row is one figure: the worker's value next to a baseline's, measured
// in the same run, and their ratio (worker / baseline: below 1 is
// faster or smaller than the baseline, for throughput above 1 is
// better).
type row struct {
	section  string // trivial, throughput, memory, input, bitbake, outputs, scaling
	workload string
	x        string // the parameter: clients, files, layers
	metric   string
	unit     string
	ours     float64
	baseline string
	base     float64
	// note is a word on how to read the figure.
	note string
}

func (r row) ratio() float64 {
	if r.base == 0 {
		return 0
	}
	return r.ours / r.base
}

type report struct {
	label string
	rows  []row
}

func (rp *report) add(r row) {
	rp.rows = append(rp.rows, r)
	if r.section == "rss_series" {
		return
	}
	fmt.Fprintf(os.Stderr, "  %-10s %-22s %-6s %-18s %10s %s  vs %-28s %10s  = %.2fx\n",
		r.section, r.workload, r.x, r.metric, format(r.ours), r.unit, r.baseline, format(r.base), r.ratio())
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func format(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

var sectionTitles = map[string]string{
	"trivial":    "Per-action overhead (trivial action, /bin/true, empty input root)",
	"throughput": "Throughput (distinct /bin/true actions, N concurrent clients)",
	"memory":     "Memory (RSS of the worker process and its sandbox launcher, from /proc)",
	"input":      "10,000-file input root (100 directories of 100 files of 1 KiB)",
	"bitbake":    "BitBake-like task (recipe-sysroot = union of 20 sysroots, 10,000 files)",
	"outputs":    "1 GB of outputs (1000 files of 1 MiB written by the action)",
	"scaling":    "Scaling (setup and upload vs input size and layer count)",
}

var sectionOrder = []string{"trivial", "throughput", "memory", "input", "bitbake", "outputs", "scaling"}

// markdown writes one table per section.
func (rp *report) markdown(w io.Writer) {
	bySection := map[string][]row{}
	for _, r := range rp.rows {
		bySection[r.section] = append(bySection[r.section], r)
	}
	for _, s := range sectionOrder {
		rows := bySection[s]
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n### %s\n\n", sectionTitles[s])
		fmt.Fprintf(w, "| workload | param | metric | %s | baseline | baseline value | ratio |\n", rp.label)
		fmt.Fprintln(w, "|---|---|---|---:|---|---:|---:|")
		for _, r := range rows {
			ratio := "-"
			if r.base != 0 {
				ratio = fmt.Sprintf("%.2fx", r.ratio())
			}
			metric := r.metric
			if r.note != "" {
				metric += " (" + r.note + ")"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s %s | %s | %s %s | %s |\n",
				r.workload, r.x, metric, format(r.ours), r.unit, r.baseline, format(r.base), r.unit, ratio)
		}
		if s == "memory" {
			for _, kind := range []string{"RSS", "anonymous RSS", "Go heap goal"} {
				var series []string
				for _, r := range bySection["rss_series"] {
					if r.workload == kind {
						series = append(series, fmt.Sprintf("%s: %s", r.x, format(r.ours)))
					}
				}
				if len(series) > 0 {
					fmt.Fprintf(w, "\n%s (MiB) after N actions of the memory run: %s\n", kind, strings.Join(series, ", "))
				}
			}
		}
	}
}

func (rp *report) writeCSV(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"label", "section", "workload", "x", "metric", "unit", "ours", "baseline", "baseline_value", "ratio", "note"})
	rows := append([]row{}, rp.rows...)
	sort.SliceStable(rows, func(i, j int) bool { return sectionIndex(rows[i].section) < sectionIndex(rows[j].section) })
	for _, r := range rows {
		w.Write([]string{rp.label, r.section, r.workload, r.x, r.metric, r.unit,
			strconv.FormatFloat(r.ours, 'g', 6, 64), r.baseline, strconv.FormatFloat(r.base, 'g', 6, 64),
			strconv.FormatFloat(r.ratio(), 'g', 4, 64), r.note})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sectionIndex(s string) int {
	for i, o := range sectionOrder {
		if o == s {
			return i
		}
	}
	return len(sectionOrder)
}

// stats helpers

func median(ds []time.Duration) time.Duration { return percentile(ds, 0.5) }

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sorted := append([]time.Duration{}, ds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	return sorted[int(float64(len(sorted)-1)*p+0.5)]
}
