package worker

import (
	"math"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/sandbox"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// structMetadata writes what structpb would: the same Struct comes back
// whichever way it is read, and the same fields always make the same
// bytes.
func TestStructMetadataIsTheStructOfItsFields(t *testing.T) {
	for _, fields := range []map[string]any{
		{},
		{"user_time_seconds": 0.25, "peak_rss_bytes": float64(3 << 20), "timed_out": false, "oom_killed": true},
		{notCachedField: "the kernel killed a process of the action for exceeding its memory limit of 1 bytes"},
		{"": "", "zero": 0.0, "negative": -1.5, "inf": math.Inf(1), "nan": math.NaN(), "ü": "ünïcode"},
		{"nested": map[string]any{"a": 1.0}, "list": []any{"x", true}},
	} {
		a := structMetadata(fields)
		if a == nil {
			t.Fatalf("%v: no metadata", fields)
		}
		var got structpb.Struct
		if err := a.UnmarshalTo(&got); err != nil {
			t.Fatalf("%v: %v", fields, err)
		}
		want, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		// NaN is not equal to itself: compare the encodings.
		wantBytes, _ := proto.MarshalOptions{Deterministic: true}.Marshal(want)
		gotBytes, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&got)
		if string(gotBytes) != string(wantBytes) {
			t.Errorf("%v: decodes to %v, want %v", fields, &got, want)
		}
		if again := structMetadata(fields); flat(fields) && string(again.Value) != string(a.Value) {
			t.Errorf("%v: encoded differently the second time", fields)
		}
		for name := range fields {
			v, ok := StructMetadataField([]*anypb.Any{a}, name)
			if !ok || !proto.Equal(v, want.Fields[name]) && !hasNaN(fields) {
				t.Errorf("%v: field %q read back as %v, %v", fields, name, v, ok)
			}
		}
		if _, ok := StructMetadataField([]*anypb.Any{a}, "absent"); ok {
			t.Errorf("%v: found a field it does not have", fields)
		}
	}
	for _, bad := range []map[string]any{{"\xff": 1.0}, {"k": "\xff"}, {"k": make(chan int)}} {
		if a := structMetadata(bad); a != nil {
			t.Errorf("%v: encoded as %v, which no Struct holds", bad, a)
		}
	}
}

// The resource usage holds the fields it always had, as a Struct.
func TestResourceUsageFields(t *testing.T) {
	run := &sandbox.Result{UserTime: time.Second, SystemTime: 2 * time.Second, PeakRSSBytes: 3, WallTime: 4 * time.Second, SetupTime: 5 * time.Second, OOMKilled: true, StderrTruncated: true, CgroupMemoryPeak: 6, Signal: 9}
	want, _ := structpb.NewStruct(map[string]any{
		"user_time_seconds": 1.0, "system_time_seconds": 2.0, "peak_rss_bytes": 3.0, "wall_time_seconds": 4.0,
		"sandbox_setup_seconds": 5.0, "timed_out": false, "oom_killed": true, "stdout_truncated": false,
		"stderr_truncated": true, "cgroup_memory_peak_bytes": 6.0, "signal": 9.0,
	})
	var got structpb.Struct
	if err := resourceUsage(run).UnmarshalTo(&got); err != nil || !proto.Equal(&got, want) {
		t.Errorf("resource usage %v (%v), want %v", &got, err, want)
	}
}

// flat tells whether structMetadata writes fields itself (rather than
// through structpb, whose map order varies).
func flat(fields map[string]any) bool {
	for _, v := range fields {
		switch v.(type) {
		case float64, bool, string:
		default:
			return false
		}
	}
	return true
}

func hasNaN(fields map[string]any) bool {
	for _, v := range fields {
		if f, ok := v.(float64); ok && math.IsNaN(f) {
			return true
		}
	}
	return false
}

// The last Struct holding a field gives its value; other messages are
// skipped.
func TestStructMetadataFieldTakesTheLastStructWithTheField(t *testing.T) {
	other, _ := anypb.New(durationpb.New(1))
	metadata := []*anypb.Any{
		structMetadata(map[string]any{"a": "first", "b": 1.0}),
		other,
		structMetadata(map[string]any{"a": "second"}),
		structMetadata(map[string]any{"c": true}),
	}
	if v, ok := StructMetadataField(metadata, "a"); !ok || v.GetStringValue() != "second" {
		t.Errorf("a = %v, %v; want second", v, ok)
	}
	if v, ok := StructMetadataField(metadata, "b"); !ok || v.GetNumberValue() != 1 {
		t.Errorf("b = %v, %v; want 1", v, ok)
	}
	if _, ok := StructMetadataField(metadata, "seconds"); ok {
		t.Error("a Duration's field was read as a Struct's")
	}
}

// FuzzStructField: reading one field of whatever bytes claim to be a
// Struct gives what unmarshalling the whole Struct gives. Run with
//
//	go test -run XXX -fuzz FuzzStructField -fuzztime 30s ./worker
func FuzzStructField(f *testing.F) {
	for _, fields := range []map[string]any{
		{"timed_out": true, "user_time_seconds": 0.5},
		{notCachedField: "why"},
		{"nested": map[string]any{"timed_out": true}, "timed_out": nil},
	} {
		f.Add(structMetadata(fields).Value, "timed_out")
	}
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00}, "")
	f.Add([]byte{0x0a, 0x04, 0x0a, 0x01, 'k', 0x12}, "k")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		a := &anypb.Any{TypeUrl: structTypeURL, Value: data}
		got, gotOK := structField(a, name)
		want, wantOK := genericStructField(a, name)
		if gotOK != wantOK || !proto.Equal(got, want) {
			t.Errorf("field %q of %x: %v, %v; unmarshalled: %v, %v", name, data, got, gotOK, want, wantOK)
		}
	})
}

// BenchmarkResultMetadata is what every action pays for its Struct
// metadata in this package: the resource usage written, and the
// caching decorator's look for the reason not to cache.
func BenchmarkResultMetadata(b *testing.B) {
	run := &sandbox.Result{UserTime: time.Millisecond, SystemTime: 2 * time.Millisecond, PeakRSSBytes: 3 << 20, WallTime: 4 * time.Millisecond, SetupTime: time.Millisecond, CgroupMemoryPeak: 5 << 20}
	for b.Loop() {
		result := &remoteexecution.ActionResult{ExecutionMetadata: &remoteexecution.ExecutedActionMetadata{AuxiliaryMetadata: []*anypb.Any{resourceUsage(run)}}}
		if _, ok := notCachedReason(result); ok {
			b.Fatal("not cached")
		}
	}
}
