package worker

import (
	"reflect"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/sandbox"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestStageNames(t *testing.T) {
	got := []string{}
	for s := StageStarted; s <= StageCompleted+1; s++ {
		got = append(got, s.String())
	}
	want := []string{"started", "fetching inputs", "running", "uploading outputs", "completed", "unknown"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stage names %q, want %q", got, want)
	}
}

func TestResourceUsageReportsWhatTheSandboxMeasured(t *testing.T) {
	fields := func(r *sandbox.Result) map[string]any {
		t.Helper()
		var s structpb.Struct
		if err := resourceUsage(r).UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		return s.AsMap()
	}
	got := fields(&sandbox.Result{
		UserTime: 1500 * time.Millisecond, SystemTime: 250 * time.Millisecond, PeakRSSBytes: 4096,
		WallTime: 2 * time.Second, SetupTime: 10 * time.Millisecond, TimedOut: true, StderrTruncated: true,
	})
	want := map[string]any{
		"user_time_seconds": 1.5, "system_time_seconds": 0.25, "peak_rss_bytes": 4096.0,
		"wall_time_seconds": 2.0, "sandbox_setup_seconds": 0.01, "timed_out": true, "oom_killed": false,
		"stdout_truncated": false, "stderr_truncated": true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("usage %v, want %v", got, want)
	}
	// Only measured when there is something to say.
	got = fields(&sandbox.Result{CgroupMemoryPeak: 1 << 20, Signal: 9})
	if got["cgroup_memory_peak_bytes"] != float64(1<<20) || got["signal"] != 9.0 {
		t.Errorf("usage %v, want the cgroup peak and the signal", got)
	}
}

func TestSortPlatformByNameThenValue(t *testing.T) {
	p := platformOf("OSFamily", "linux", "ISA", "x86-64", "Pool", "b", "Pool", "a", "ISA", "arm-a64")
	SortPlatform(p)
	var got []string
	for _, property := range p.Properties {
		got = append(got, property.Name+"="+property.Value)
	}
	want := []string{"ISA=arm-a64", "ISA=x86-64", "OSFamily=linux", "Pool=a", "Pool=b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sorted %q, want %q", got, want)
	}
}
