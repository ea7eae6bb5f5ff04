package execution

import (
	"fmt"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

func TestCompletedOperationsAreBoundedInCountAndTime(t *testing.T) {
	s := NewServer(Options{CompletedRetention: time.Hour, MaximumCompleted: 10})
	d := digest.MustNewDigest("", remoteexecution.DigestFunction_SHA256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0)
	for i := 0; i < 100; i++ {
		op := newOperation(fmt.Sprint(i), d)
		s.operations[op.name] = op
		s.forgetLater(op)
	}
	if len(s.operations) != 10 || len(s.completed) != 10 {
		t.Fatalf("%d operations and %d completed kept, want 10", len(s.operations), len(s.completed))
	}
	if _, ok := s.operations["99"]; !ok {
		t.Error("the newest operation was forgotten")
	}
	if _, ok := s.operations["89"]; ok {
		t.Error("an operation beyond the count bound was kept")
	}

	s = NewServer(Options{CompletedRetention: time.Millisecond, MaximumCompleted: 1000})
	old := newOperation("old", d)
	s.operations["old"] = old
	s.forgetLater(old)
	time.Sleep(5 * time.Millisecond)
	fresh := newOperation("fresh", d)
	s.operations["fresh"] = fresh
	s.forgetLater(fresh)
	if _, ok := s.operations["old"]; ok {
		t.Error("an operation past its retention was kept")
	}
	if _, ok := s.operations["fresh"]; !ok {
		t.Error("a fresh operation was forgotten")
	}
}
