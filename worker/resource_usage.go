package worker

import (
	"github.com/bitzel/bitzel-worker/sandbox"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// resourceUsage reports what the sandbox measured as auxiliary
// metadata. A Struct needs no proto of ours to decode: a client or a
// person with grpcurl sees the field names.
func resourceUsage(r *sandbox.Result) *anypb.Any {
	fields := map[string]any{
		"user_time_seconds":     r.UserTime.Seconds(),
		"system_time_seconds":   r.SystemTime.Seconds(),
		"peak_rss_bytes":        float64(r.PeakRSSBytes),
		"wall_time_seconds":     r.WallTime.Seconds(),
		"sandbox_setup_seconds": r.SetupTime.Seconds(),
		"timed_out":             r.TimedOut,
		"oom_killed":            r.OOMKilled,
		"stdout_truncated":      r.StdoutTruncated,
		"stderr_truncated":      r.StderrTruncated,
	}
	if r.CgroupMemoryPeak > 0 {
		fields["cgroup_memory_peak_bytes"] = float64(r.CgroupMemoryPeak)
	}
	if r.Signal != 0 {
		fields["signal"] = float64(r.Signal)
	}
	return structMetadata(fields)
}

// structMetadata is fields as an auxiliary-metadata Struct, or nil for
// a value a Struct cannot hold (only the worker's own fields go in).
func structMetadata(fields map[string]any) *anypb.Any {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		return nil
	}
	a, err := anypb.New(s)
	if err != nil {
		return nil
	}
	return a
}
