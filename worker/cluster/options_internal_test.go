package cluster

import (
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestSlotWorkerIDsFollowBBWorker(t *testing.T) {
	options := Options{WorkerID: map[string]string{"hostname": "h"}, Concurrency: 12}
	seen := map[string]bool{}
	for slot := 0; slot < 12; slot++ {
		id := options.slotWorkerID(slot)
		if id["hostname"] != "h" || len(id) != 2 {
			t.Errorf("slot %d has ID %v", slot, id)
		}
		seen[id[threadLabel]] = true
	}
	for _, want := range []string{"00", "01", "09", "10", "11"} {
		if !seen[want] {
			t.Errorf("no slot has thread %q; have %v", want, seen)
		}
	}
	if len(seen) != 12 {
		t.Errorf("%d distinct thread labels for 12 slots", len(seen))
	}

	// A single slot is the worker itself, as bb_worker has it.
	single := Options{WorkerID: map[string]string{"hostname": "h"}, Concurrency: 1}
	if id := single.slotWorkerID(0); len(id) != 1 || id["hostname"] != "h" {
		t.Errorf("single slot has ID %v", id)
	}
	// The configured map is not shared with the slots.
	options.slotWorkerID(0)["hostname"] = "changed"
	if options.WorkerID["hostname"] != "h" {
		t.Error("a slot's ID aliases the configured worker ID")
	}
}

func TestNewClientRejectsUnusableOptions(t *testing.T) {
	for name, options := range map[string]Options{
		"no slots":                {Concurrency: 0},
		"thread label with slots": {WorkerID: map[string]string{threadLabel: "x"}, Concurrency: 2},
	} {
		if _, err := NewClient(nil, nil, options); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: NewClient returned %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if _, err := NewClient(nil, nil, Options{WorkerID: map[string]string{threadLabel: "x"}, Concurrency: 1}); err != nil {
		t.Errorf("a single slot may carry its own thread label: %v", err)
	}
}

func TestPlatformIsSortedWithoutTouchingTheConfiguration(t *testing.T) {
	configured := &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{
		{Name: "b", Value: "2"}, {Name: "a", Value: "z"}, {Name: "b", Value: "1"},
	}}
	want := &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{
		{Name: "a", Value: "z"}, {Name: "b", Value: "1"}, {Name: "b", Value: "2"},
	}}
	if got := sortedPlatform(configured); !proto.Equal(got, want) {
		t.Errorf("sorted to %v", got)
	}
	if configured.Properties[0].Name != "b" {
		t.Error("the configured platform was reordered in place")
	}
	if got := sortedPlatform(nil); got == nil || len(got.Properties) != 0 {
		t.Errorf("nil platform became %v", got)
	}
}
