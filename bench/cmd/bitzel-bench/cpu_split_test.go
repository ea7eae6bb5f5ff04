package main

import (
	"os"
	"testing"
	"time"
)

func TestCPUSplitPerActionIsTheGrowthLargestFirst(t *testing.T) {
	before := cpuSplit{"bb_storage": 10 * time.Millisecond, "bitzel-worker": 40 * time.Millisecond}
	after := cpuSplit{"bb_storage": 30 * time.Millisecond, "bitzel-worker": 100 * time.Millisecond,
		"bitzel-sandbox-launcher's children": 20 * time.Millisecond, "idle": 0}
	want := "bitzel-worker 6.00, bb_storage 2.00, bitzel-sandbox-launcher's children 2.00"
	if got := after.perAction(before, 10); got != want {
		t.Errorf("perAction = %q, want %q", got, want)
	}
}

func TestReadCPUSplitNamesThisProcess(t *testing.T) {
	// Burn a little CPU so that this process has some to its name.
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
	}
	split := readCPUSplit([]int{os.Getpid(), -1})
	if len(split) == 0 {
		t.Fatal("no CPU time read for this process")
	}
	for name := range split {
		if name == "" {
			t.Errorf("a process without a name in %v", split)
		}
	}
}

func TestCPUSplitSecondsIsTheGrowth(t *testing.T) {
	before := cpuSplit{"bitzel-worker": time.Second}
	after := cpuSplit{"bitzel-worker": 3500 * time.Millisecond, "bitzel-sandbox-launcher's children": 10 * time.Second, "idle": 0}
	if got, want := after.seconds(before), "bitzel-sandbox-launcher's children 10.00, bitzel-worker 2.50"; got != want {
		t.Errorf("seconds = %q, want %q", got, want)
	}
}
