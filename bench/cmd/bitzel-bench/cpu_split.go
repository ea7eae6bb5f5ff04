package main

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/bitzel/bitzel-worker/internal/procfs"
)

// cpuSplit is a side's CPU time by process name: a process's own time
// under its name, the time of the children it reaped (a launcher's
// sandboxes, bb_runner's commands) under "NAME's children". It tells
// which process a side's CPU per action goes to.
type cpuSplit map[string]time.Duration

func readCPUSplit(pids []int) cpuSplit {
	split := cpuSplit{}
	for _, pid := range pids {
		// A process gone since it was listed adds nothing.
		own, reaped, err := procfs.CPUTimes(pid)
		if err != nil {
			continue
		}
		name := procfs.Name(pid)
		split[name] += own
		if reaped > 0 {
			split[name+"'s children"] += reaped
		}
	}
	return split
}

// perAction is what each process took between before and s, per
// action, in ms, largest first.
func (s cpuSplit) perAction(before cpuSplit, n int) string {
	shares := map[string]float64{}
	for name, cpu := range s {
		if d := cpu - before[name]; d > 0 && n > 0 {
			shares[name] = ms(d / time.Duration(n))
		}
	}
	return rankedShares(shares)
}

// seconds is what each process took between before and s, in seconds,
// largest first.
func (s cpuSplit) seconds(before cpuSplit) string {
	shares := map[string]float64{}
	for name, cpu := range s {
		if d := cpu - before[name]; d > 0 {
			shares[name] = d.Seconds()
		}
	}
	return rankedShares(shares)
}

// rankedShares lists "name value" pairs, largest value first (ties by
// name), with two decimals.
func rankedShares(shares map[string]float64) string {
	names := slices.Collect(maps.Keys(shares))
	sort.Slice(names, func(i, j int) bool {
		if shares[names[i]] != shares[names[j]] {
			return shares[names[i]] > shares[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("%s %.2f", name, shares[name])
	}
	return strings.Join(parts, ", ")
}
