package main

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// rpcCounts are the calls a Buildbarn server has handled, by method
// ("Service/Method", the service without its package), from its
// grpc_server_handled_total. The difference over a run tells how many
// calls each side's worker makes per action: bb_storage and
// bb_scheduler serve both Buildbarn's worker and ours.
type rpcCounts map[string]float64

// readRPCCounts reads a server's /metrics; an unreachable one reads as
// no calls.
func readRPCCounts(address string) rpcCounts {
	c := http.Client{Timeout: 5 * time.Second}
	response, err := c.Get("http://" + address + "/metrics")
	if err != nil {
		return rpcCounts{}
	}
	defer response.Body.Close()
	return parseRPCCounts(response.Body)
}

func parseRPCCounts(r io.Reader) rpcCounts {
	counts := rpcCounts{}
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		rest, ok := strings.CutPrefix(line, "grpc_server_handled_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		var service, method string
		for _, label := range strings.Split(labels, ",") {
			k, quoted, _ := strings.Cut(label, "=")
			val, err := strconv.Unquote(quoted)
			if err != nil {
				continue
			}
			switch k {
			case "grpc_service":
				service = val[strings.LastIndexByte(val, '.')+1:]
			case "grpc_method":
				method = val
			}
		}
		if service != "" && method != "" {
			// Summed over codes.
			counts[service+"/"+method] += v
		}
	}
	return counts
}

// perAction is the calls made between before and c, per action, most
// first.
func (c rpcCounts) perAction(before rpcCounts, n int) string {
	calls := map[string]float64{}
	for method, v := range c {
		if d := v - before[method]; d > 0 && n > 0 {
			calls[method] = d / float64(n)
		}
	}
	return rankedShares(calls)
}
