package e2e

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkThroughputWithStatusPageOpen runs 16 clients' trivial
// actions with the status page closed and open (a viewer fetching the
// page and its five plots every 500 ms, four times as often as the
// page's own refresh), in interleaved rounds of the same run, and
// reports the throughput ratio open/closed:
//
//	go test -run XXX -bench StatusPage -benchtime 2000x ./e2e/
//
// Long on purpose: the interleaved rounds of both sides and their
// ratio, in one benchmark.
func BenchmarkThroughputWithStatusPageOpen(b *testing.B) {
	const clients, rounds = 16, 10
	s := startServer(b)
	c := s.client()
	perRound := max(b.N/(2*rounds), clients)
	digests := uniqueTrueActions(c, 2*rounds*perRound+10)
	for _, d := range digests[:10] {
		executeOnce(b, c, d)
	}
	next := 10
	batch := func() time.Duration {
		todo := digests[next : next+perRound]
		next += perRound
		var i atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := int(i.Add(1)) - 1; k < len(todo); k = int(i.Add(1)) - 1 {
					executeOnce(b, c, todo[k])
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	base := "http://" + s.metricsAddr + "/status/"
	urls := []string{base, base + "plots/rate.svg"}
	for stage := range 4 {
		urls = append(urls, fmt.Sprint(base, "plots/latency/", stage))
	}
	var fetches, fetchErrors atomic.Int64
	viewer := func(stop chan struct{}, done *sync.WaitGroup) {
		defer done.Done()
		ticker := time.NewTicker(500 * time.Millisecond)
		defer ticker.Stop()
		for {
			for _, url := range urls {
				response, err := http.Get(url)
				if err != nil || response.StatusCode != http.StatusOK {
					fetchErrors.Add(1)
				}
				if err == nil {
					io.Copy(io.Discard, response.Body)
					response.Body.Close()
				}
				fetches.Add(1)
			}
			select {
			case <-stop:
				return
			case <-ticker.C:
			}
		}
	}
	var closed, open time.Duration
	// The server's CPU time per action says the same with less noise
	// than wall time on a machine shared with other work.
	var closedCPU, openCPU time.Duration
	// Each round's own ratio too: its median shrugs off a round that
	// another process on the machine slowed down.
	var ratios []time.Duration
	b.ResetTimer()
	for round := range rounds {
		var closedRound, openRound time.Duration
		// Alternate which goes first, so that neither always runs on
		// the warmer machine.
		for k := range 2 {
			cpu := serverCPU(b, s)
			if (round+k)%2 == 0 {
				closedRound = batch()
				closedCPU += serverCPU(b, s) - cpu
				continue
			}
			stop := make(chan struct{})
			var done sync.WaitGroup
			done.Add(1)
			go viewer(stop, &done)
			openRound = batch()
			close(stop)
			done.Wait()
			openCPU += serverCPU(b, s) - cpu
		}
		closed, open = closed+closedRound, open+openRound
		ratios = append(ratios, time.Duration(1e6*closedRound.Seconds()/openRound.Seconds()))
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(ratios, 0.5))/1e6, "median-round-x-open/closed")
	if fetchErrors.Load() > 0 {
		b.Fatalf("%d of %d page fetches failed", fetchErrors.Load(), fetches.Load())
	}
	n := float64(rounds * perRound)
	b.ReportMetric(n/closed.Seconds(), "closed-actions/s")
	b.ReportMetric(n/open.Seconds(), "open-actions/s")
	b.ReportMetric(closed.Seconds()/open.Seconds(), "x-open/closed")
	b.ReportMetric(float64(fetches.Load()), "page-fetches")
	b.ReportMetric(closedCPU.Seconds()*1e3/n, "closed-server-cpu-ms/action")
	b.ReportMetric(openCPU.Seconds()*1e3/n, "open-server-cpu-ms/action")
	b.ReportMetric(openCPU.Seconds()/closedCPU.Seconds(), "x-cpu-open/closed")
	b.ReportMetric(0, "ns/op")
}
