package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/bitzel/bitzel-worker/internal/testsupport"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

// The trivial-action workloads: latency of one client, throughput of
// many, and the worker's memory over 10,000 actions.

// trueActions uploads n distinct /bin/true actions with an empty input
// root.
func (h *harness) trueActions(n int) ([]digest.Digest, error) {
	b := blobs{}
	actions := make([]digest.Digest, n)
	for i := range actions {
		actions[i] = h.ep.action(b, command{args: []string{"/bin/true"}}, h.next())
	}
	return actions, h.ep.upload(context.Background(), b)
}

func (h *harness) trivial(n int) error {
	actions, err := h.trueActions(n + 20)
	if err != nil {
		return err
	}
	ctx := context.Background()
	// Warm up the connection, the caches and the warm sandbox pool.
	for _, a := range actions[:20] {
		if _, err := h.ep.execute(ctx, a); err != nil {
			return err
		}
	}
	time.Sleep(200 * time.Millisecond)
	var ours, fork, bwrap []time.Duration
	var bwrapCPU time.Duration
	// Where an action's time goes, from ExecutedActionMetadata: queued
	// until a worker took it, the worker's three stages, and the rest
	// (RPCs between client, front end and worker, outside the worker).
	var parts [][5]time.Duration
	// Blocks of 10 of each, in turn: close enough in time to share the
	// machine's drift, apart enough that one's asynchronous teardown
	// (a network namespace is freed by a kernel worker after exit)
	// does not land on the other's measurement.
	const block = 10
	// The worker's CPU over the whole loop: only its processes count,
	// and its asynchronous work (teardown, refilling the pool) is in.
	cpuBefore := cpuTime(h.pids())
	for i := 20; i < len(actions); i += block {
		time.Sleep(20 * time.Millisecond)
		for _, a := range actions[i:min(i+block, len(actions))] {
			start := time.Now()
			result, err := h.ep.execute(ctx, a)
			if err != nil {
				return err
			}
			elapsed := time.Since(start)
			ours = append(ours, elapsed)
			m := result.ExecutionMetadata
			st := stagesOf(m)
			queued := m.GetWorkerStartTimestamp().AsTime().Sub(m.GetQueuedTimestamp().AsTime())
			parts = append(parts, [5]time.Duration{queued, st.fetch, st.run, st.upload, elapsed - st.worker - queued})
		}
		time.Sleep(20 * time.Millisecond)
		for j := 0; j < block; j++ {
			d, _, err := forkExecTrue()
			if err != nil {
				return err
			}
			fork = append(fork, d)
		}
		if h.bwrap {
			time.Sleep(20 * time.Millisecond)
			for j := 0; j < block; j++ {
				d, c, err := bwrapTrue()
				if err != nil {
					return err
				}
				bwrap = append(bwrap, d)
				bwrapCPU += c
			}
		}
	}
	cpu := cpuTime(h.pids()) - cpuBefore
	x := fmt.Sprint(n, " actions")
	h.add(row{section: "trivial", workload: "latency", x: x, metric: "median", unit: "ms", ours: ms(median(ours)), baseline: "fork/exec /bin/true", base: ms(median(fork))})
	if h.bwrap {
		h.add(row{section: "trivial", workload: "latency", x: x, metric: "median", unit: "ms", ours: ms(median(ours)), baseline: "bwrap --unshare-all true", base: ms(median(bwrap))})
		h.add(row{section: "trivial", workload: "latency", x: x, metric: "p90", unit: "ms", ours: ms(percentile(ours, 0.9)), baseline: "bwrap --unshare-all true", base: ms(percentile(bwrap, 0.9))})
		if len(h.pids()) > 0 {
			h.add(row{section: "trivial", workload: "worker CPU", x: x, metric: "CPU per action", unit: "ms", ours: ms(cpu) / float64(n),
				baseline: "bwrap CPU per run", base: ms(bwrapCPU) / float64(len(bwrap)), note: "the worker's processes and the children they reaped"})
		}
	}
	for i, name := range []string{"queued until a worker took it", "input fetch", "execution (sandbox + /bin/true)", "output upload", "outside the worker (RPCs)"} {
		var ds []time.Duration
		for _, p := range parts {
			ds = append(ds, p[i])
		}
		h.add(row{section: "trivial", workload: "where the time goes", x: x, metric: name + ", median", unit: "ms", ours: ms(median(ds))})
	}
	return nil
}

// rssSampler records the peak RSS of the worker's processes while it
// runs.
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	peak rss
}

func (h *harness) sampleRSS() *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		ticker := time.NewTicker(50 * time.Millisecond)
		defer ticker.Stop()
		for {
			r := readRSS(h.pids())
			s.peak.total = max(s.peak.total, r.total)
			s.peak.anon = max(s.peak.anon, r.anon)
			s.peak.file = max(s.peak.file, r.file)
			select {
			case <-s.stop:
				return
			case <-ticker.C:
			}
		}
	}()
	return s
}

// finish stops the sampler and folds its peak into the harness's.
func (s *rssSampler) finish(h *harness) rss {
	close(s.stop)
	<-s.done
	h.peakRSS.total = max(h.peakRSS.total, s.peak.total)
	h.peakRSS.anon = max(h.peakRSS.anon, s.peak.anon)
	h.peakRSS.file = max(h.peakRSS.file, s.peak.file)
	return s.peak
}

func (h *harness) throughput(levels []int, perClient, minimum int) error {
	ctx := context.Background()
	warm, err := h.trueActions(20)
	if err != nil {
		return err
	}
	for _, a := range warm {
		if _, err := h.ep.execute(ctx, a); err != nil {
			return err
		}
	}
	for _, c := range levels {
		n := max(minimum, perClient*c)
		actions, err := h.trueActions(n)
		if err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
		sampler := h.sampleRSS()
		elapsed, err := testsupport.Concurrently(c, n, func(i int) error { _, err := h.ep.execute(ctx, actions[i]); return err }, nil)
		peak := sampler.finish(h)
		if err != nil {
			return err
		}
		fork, err := testsupport.Concurrently(c, n, func(int) error { _, _, err := forkExecTrue(); return err }, nil)
		if err != nil {
			return err
		}
		rate := float64(n) / elapsed.Seconds()
		x := fmt.Sprintf("%d clients", c)
		h.add(row{section: "throughput", workload: "actions/s", x: x, metric: fmt.Sprintf("%d actions", n), unit: "/s", ours: rate, baseline: "fork/exec /bin/true", base: float64(n) / fork.Seconds()})
		if h.bwrap {
			bw, err := testsupport.Concurrently(c, n, func(int) error { _, _, err := bwrapTrue(); return err }, nil)
			if err != nil {
				return err
			}
			h.add(row{section: "throughput", workload: "actions/s", x: x, metric: fmt.Sprintf("%d actions", n), unit: "/s", ours: rate, baseline: "bwrap --unshare-all true", base: float64(n) / bw.Seconds()})
		}
		if peak.total > 0 {
			fmt.Fprintf(os.Stderr, "  peak RSS at %d clients: %.1f MiB (anonymous %.1f MiB)\n", c, mib(peak.total), mib(peak.anon))
		}
	}
	return nil
}

// memory runs total distinct actions from 16 clients and samples the
// worker's RSS every step actions; growth is judged between the first
// sample (caches, pools and gRPC buffers warmed) and the last.
func (h *harness) memory(total, step int) error {
	if len(h.pids()) == 0 {
		return nil
	}
	ctx := context.Background()
	actions, err := h.trueActions(total)
	if err != nil {
		return err
	}
	fdsBefore := openFDs(h.pids())
	samples := make([]rss, total/step+1)
	goSamples := make([]map[string]float64, total/step+1)
	var mu sync.Mutex
	sampler := h.sampleRSS()
	elapsed, err := testsupport.Concurrently(16, total, func(i int) error { _, err := h.ep.execute(ctx, actions[i]); return err }, func(done int) {
		if done%step == 0 {
			r := readRSS(h.pids())
			g := goMetrics(h.metrics)
			mu.Lock()
			samples[done/step] = r
			goSamples[done/step] = g
			mu.Unlock()
		}
	})
	sampler.finish(h)
	if err != nil {
		return err
	}
	// Let the sandboxes of the last actions be reaped and the pool
	// refill: "after" is the idle worker again.
	time.Sleep(3 * time.Second)
	after := readRSS(h.pids())
	fdsAfter := openFDs(h.pids())
	first := samples[1]
	last := samples[len(samples)-1]
	fmt.Fprintf(os.Stderr, "  RSS every %d actions, total/anonymous (MiB):", step)
	for _, s := range samples[1:] {
		fmt.Fprintf(os.Stderr, " %.1f/%.1f", mib(s.total), mib(s.anon))
	}
	fmt.Fprintf(os.Stderr, "  (%.0f actions/s)\n", float64(total)/elapsed.Seconds())
	for i, s := range samples[1:] {
		h.add(row{section: "rss_series", workload: "RSS", x: fmt.Sprint((i + 1) * step), metric: "total", unit: "MiB", ours: mib(s.total)})
		h.add(row{section: "rss_series", workload: "anonymous RSS", x: fmt.Sprint((i + 1) * step), metric: "anonymous", unit: "MiB", ours: mib(s.anon)})
	}
	for _, kind := range []struct {
		name string
		get  func(rss) int64
	}{{"RSS", func(r rss) int64 { return r.total }}, {"anonymous RSS", func(r rss) int64 { return r.anon }}} {
		add := func(x, metric string, ours rss, baseline string, base rss, note string) {
			r := row{section: "memory", workload: kind.name, x: x, metric: metric, unit: "MiB", ours: mib(kind.get(ours)), baseline: baseline, note: note}
			if baseline != "" {
				r.base = mib(kind.get(base))
			}
			h.add(r)
		}
		add("idle", "after start-up", h.idleRSS, "", rss{}, "")
		add("load", "peak, all load phases so far", h.peakRSS, "idle after start-up", h.idleRSS, "")
		add(fmt.Sprint(step), fmt.Sprintf("after %d actions", step), first, "idle after start-up", h.idleRSS, "")
		add(fmt.Sprint(total), fmt.Sprintf("after %d actions", total), last, fmt.Sprintf("after %d actions", step), first, "growth")
		add("idle again", fmt.Sprintf("3 s after %d actions", total), after, "idle after start-up", h.idleRSS, "")
	}
	if goFirst, goLast := goSamples[1], goSamples[len(goSamples)-1]; len(goFirst) > 0 && len(goLast) > 0 {
		const goal = "go_memstats_next_gc_bytes"
		h.add(row{section: "memory", workload: "Go heap goal", x: fmt.Sprint(total), metric: fmt.Sprintf("after %d actions", total), unit: "MiB",
			ours: goLast[goal] / (1 << 20), baseline: fmt.Sprintf("after %d actions", step), base: goFirst[goal] / (1 << 20), note: "2x the live heap"})
		h.add(row{section: "memory", workload: "goroutines", x: fmt.Sprint(total), metric: fmt.Sprintf("after %d actions", total),
			ours: goLast["go_goroutines"], baseline: fmt.Sprintf("after %d actions", step), base: goFirst["go_goroutines"]})
		for i, g := range goSamples[1:] {
			h.add(row{section: "rss_series", workload: "Go heap goal", x: fmt.Sprint((i + 1) * step), metric: "go_memstats_next_gc_bytes", unit: "MiB", ours: g[goal] / (1 << 20)})
		}
	}
	h.add(row{section: "memory", workload: "open fds", x: fmt.Sprint(total), metric: fmt.Sprintf("after %d actions", total), ours: float64(fdsAfter), baseline: "before", base: float64(fdsBefore)})
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
