package worker

import (
	"github.com/bitzel/bitzel-worker/sandbox"
	"google.golang.org/protobuf/types/known/anypb"
)

// resourceUsage reports what the sandbox measured as auxiliary
// metadata. A Struct needs no proto of ours to decode: a client or a
// person with grpcurl sees the field names.
func resourceUsage(r *sandbox.Result) *anypb.Any {
	var s structBuilder
	s.number("user_time_seconds", r.UserTime.Seconds())
	s.number("system_time_seconds", r.SystemTime.Seconds())
	s.number("peak_rss_bytes", float64(r.PeakRSSBytes))
	s.number("wall_time_seconds", r.WallTime.Seconds())
	s.number("sandbox_setup_seconds", r.SetupTime.Seconds())
	s.boolean("timed_out", r.TimedOut)
	s.boolean("oom_killed", r.OOMKilled)
	s.boolean("stdout_truncated", r.StdoutTruncated)
	s.boolean("stderr_truncated", r.StderrTruncated)
	if r.CgroupMemoryPeak > 0 {
		s.number("cgroup_memory_peak_bytes", float64(r.CgroupMemoryPeak))
	}
	if r.Signal != 0 {
		s.number("signal", float64(r.Signal))
	}
	return s.message()
}
