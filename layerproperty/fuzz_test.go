package layerproperty

import (
	"fmt"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var sha256Function = digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)

// The bitzel.layers value is what a client controls completely. Run
// the fuzzer with, e.g.,
//
//	go test -run XXX -fuzz FuzzParseLayersProperty -fuzztime 30s ./layerproperty
//
// The committed corpus (testdata/fuzz) also runs as a plain test.

func FuzzParseLayersProperty(f *testing.F) {
	h := strings.Repeat("a", 64)
	for _, seed := range []string{
		"", h + "/1", h + "/1 " + strings.Repeat("b", 64) + "/22", h + "/1 " + h + "/1",
		h, "/1", h + "/-1", h + "/1/2", h + "/99999999999999999999", "\t" + h + "/0\n", strings.Repeat("A", 64) + "/1",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		layers, err := Parse(sha256Function, value)
		if err != nil {
			msg := status.Convert(err).Message()
			if layers != nil {
				t.Fatalf("error %q with layers %v", msg, layers)
			}
			if !strings.Contains(msg, Name) {
				t.Fatalf("error %q does not name the property", msg)
			}
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error %v is not INVALID_ARGUMENT", err)
			}
			return
		}
		if len(layers) != len(strings.Fields(value)) {
			t.Fatalf("%d layers from %d fields", len(layers), len(strings.Fields(value)))
		}
		// What was accepted prints back to something that parses to
		// the same list, without duplicates.
		var printed []string
		seen := map[digest.Digest]bool{}
		for _, l := range layers {
			if seen[l] {
				t.Fatalf("duplicate %v accepted", l)
			}
			seen[l] = true
			if l.GetSizeBytes() < 0 {
				t.Fatalf("negative size accepted: %v", l)
			}
			printed = append(printed, fmt.Sprintf("%s/%d", l.GetHashString(), l.GetSizeBytes()))
		}
		if formatted := Format(layers); formatted != strings.Join(printed, " ") {
			t.Fatalf("Format(%v) = %q, want %q", layers, formatted, strings.Join(printed, " "))
		}
		again, err := Parse(sha256Function, strings.Join(printed, " "))
		if err != nil || len(again) != len(layers) {
			t.Fatalf("round trip of %q: %v, %v", value, again, err)
		}
		for i := range again {
			if again[i] != layers[i] {
				t.Fatalf("round trip changed layer %d: %v != %v", i, again[i], layers[i])
			}
		}
	})
}
