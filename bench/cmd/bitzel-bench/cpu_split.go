package main

import (
	"fmt"
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
// action, largest first.
func (s cpuSplit) perAction(before cpuSplit, n int) string {
	type share struct {
		name string
		cpu  time.Duration
	}
	var shares []share
	for name, cpu := range s {
		if d := cpu - before[name]; d > 0 && n > 0 {
			shares = append(shares, share{name, d / time.Duration(n)})
		}
	}
	sort.Slice(shares, func(i, j int) bool {
		if shares[i].cpu != shares[j].cpu {
			return shares[i].cpu > shares[j].cpu
		}
		return shares[i].name < shares[j].name
	})
	parts := make([]string, len(shares))
	for i, sh := range shares {
		parts[i] = fmt.Sprintf("%s %.2f", sh.name, ms(sh.cpu))
	}
	return strings.Join(parts, ", ")
}
