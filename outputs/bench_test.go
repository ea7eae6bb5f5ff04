package outputs

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/layers/layerstest"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

// Benchmarks print ratios against baselines measured in the same run
// (sha256sum), since absolute times drift between machines. They never
// assert on time.

func run(b *testing.B, name string, args ...string) time.Duration {
	start := time.Now()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s: %v: %s", name, err, out)
	}
	return time.Since(start)
}

// newBenchEnv is newTestEnv outside a test's temp dir, so that the
// data outlives one benchmark iteration.
func newBenchEnv(b *testing.B, base string, casSize int64) *testEnv {
	s, err := storage.NewLocalStorage(filepath.Join(base, "storage"), casSize, 16<<20)
	if err != nil {
		b.Fatal(err)
	}
	counting := &layerstest.CountingBlobAccess{BlobAccess: s.ContentAddressableStorage}
	s.ContentAddressableStorage = counting
	return newTestEnvOn(b, base, s, counting, layers.MaterializerOptions{})
}

func removeTree(p string) { fsutil.RemoveAll(p) }

// BenchmarkUpload1GB: 1000 output files of 1 MiB captured as an output
// directory into an empty local CAS. Baseline: sha256sum of the files.
func BenchmarkUpload1GB(b *testing.B) {
	base, err := os.MkdirTemp("", "bitzel-cas-upload-")
	if err != nil {
		b.Fatal(err)
	}
	defer removeTree(base)
	upper := filepath.Join(base, "upper")
	out := filepath.Join(upper, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewSource(2))
	data := make([]byte, 1<<20)
	var names []string
	for i := 0; i < 1000; i++ {
		rng.Read(data)
		name := filepath.Join(out, fmt.Sprintf("o%04d", i))
		if err := os.WriteFile(name, data, 0o644); err != nil {
			b.Fatal(err)
		}
		names = append(names, name)
	}
	const total = 1000 << 20
	b.SetBytes(total)
	var ours, hashOnly time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := filepath.Join(base, fmt.Sprintf("run%d", i))
		e := newBenchEnv(b, dir, 3<<30)
		r, err := e.m.Materialize(context.Background(), digest.EmptyInstanceName, digestOf(nil))
		if err != nil {
			b.Fatal(err)
		}
		oc := NewOutputCapturer(e.storage, OutputCapturerOptions{})
		b.StartTimer()
		start := time.Now()
		if _, err := oc.Capture(context.Background(), digest.EmptyInstanceName, r, []string{upper}, &remoteexecution.Command{OutputDirectories: []string{"out"}}); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		b.StopTimer()
		if n := e.cas.Puts.Load(); n != 1001 {
			b.Fatalf("%d uploads, want 1001", n)
		}
		// Again, now that the CAS has everything: hashing and
		// FindMissing only, without the disk writes of the store.
		start = time.Now()
		if _, err := oc.Capture(context.Background(), digest.EmptyInstanceName, r, []string{upper}, &remoteexecution.Command{OutputDirectories: []string{"out"}}); err != nil {
			b.Fatal(err)
		}
		hashOnly += time.Since(start)
		r.Release()
		e.storage.Close()
		removeTree(dir)
		b.StartTimer()
	}
	b.StopTimer()
	shaTime := run(b, "sha256sum", names...)
	oursMBs := float64(total) / 1e6 / (ours.Seconds() / float64(b.N))
	shaMBs := float64(total) / 1e6 / shaTime.Seconds()
	b.ReportMetric(oursMBs, "MB/s")
	b.ReportMetric(shaMBs, "sha256sum_MB/s")
	b.ReportMetric(oursMBs/shaMBs, "x_sha256sum")
	hashMBs := float64(total) / 1e6 / (hashOnly.Seconds() / float64(b.N))
	b.ReportMetric(hashMBs/shaMBs, "present_x_sha256sum")
}
