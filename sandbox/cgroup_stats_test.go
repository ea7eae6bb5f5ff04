package sandbox

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestCgroupCountersAreReadBeforeTheCgroupIsRemoved: the runner
// removes an action's cgroup in the background once its PID 1 is
// reaped, which can come before the result is assembled. Counters read
// after the removal read as nothing, so an action whose child was
// OOM-killed looked clean and its result was cached (seen in CI). The
// fake's read takes a while, as a read racing PID 1's exit may, and
// reports nothing once the cgroup is gone.
func TestCgroupCountersAreReadBeforeTheCgroupIsRemoved(t *testing.T) {
	manager := &slowStatsManager{}
	e := newEnv(t, func(c *Config) { c.Cgroups = manager })
	for i := 0; i < 3; i++ {
		result, err := e.runner.Run(context.Background(), &Spec{
			Mounts: []Mount{e.mount("", e.dir("layers/empty"))},
			Argv:   []string{"/bin/true"},
			Env:    []string{"PATH=/usr/bin:/bin"},
			Stdout: &strings.Builder{},
			Stderr: &strings.Builder{},
			Limits: Limits{MemoryBytes: 64 << 20},
		})
		if err != nil {
			t.Fatal(err)
		}
		if !result.OOMKilled || result.CgroupMemoryPeak != 1234 {
			t.Fatalf("run %d: OOMKilled %v, memory peak %d: the counters were read after the cgroup was removed", i, result.OOMKilled, result.CgroupMemoryPeak)
		}
	}
}

// slowStatsManager hands out cgroups that record an OOM kill and whose
// counters vanish with them.
type slowStatsManager struct{}

func (slowStatsManager) Create(string, Limits) (ActionCgroup, error) { return &slowStatsCgroup{}, nil }
func (slowStatsManager) Close() error                                { return nil }
func (slowStatsManager) String() string                              { return "slow-stats fake" }

type slowStatsCgroup struct{ removed atomic.Bool }

func (c *slowStatsCgroup) Join(int) error  { return nil }
func (c *slowStatsCgroup) Leave(int) error { return nil }
func (c *slowStatsCgroup) Remove() error   { c.removed.Store(true); return nil }

func (c *slowStatsCgroup) Stats() CgroupStats {
	time.Sleep(100 * time.Millisecond)
	if c.removed.Load() {
		return CgroupStats{}
	}
	return CgroupStats{OOMKilled: true, MemoryPeakBytes: 1234}
}
