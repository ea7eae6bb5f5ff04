package e2e

import (
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestPlatformAsClientsSpellIt: serve offers the host in the REAPI
// platform lexicon's spelling and matches its values
// case-insensitively, so that Bazel's usual OSFamily=Linux and
// BuildStream's OSFamily=linux, ISA=x86-64 both run; what it does not
// offer is refused with the flag that would offer it.
func TestPlatformAsClientsSpellIt(t *testing.T) {
	c := startServer(t).client()
	for _, platform := range []map[string]string{
		{"OSFamily": "Linux"},                  // Bazel
		{"OSFamily": "linux", "ISA": "x86-64"}, // BuildStream 2
	} {
		if hostISA() != "x86-64" && platform["ISA"] != "" {
			platform["ISA"] = hostISA()
		}
		result := c.run(action{args: sh("echo ran"), platform: platform})
		if got := string(c.read(result.StdoutDigest)); got != "ran\n" {
			t.Errorf("platform %v: stdout %q", platform, got)
		}
	}
	response, _ := c.execute(c.newAction(action{args: []string{"/bin/true"}, platform: map[string]string{"OSFamily": "windows"}}), false)
	st := status.FromProto(response.Status)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("OSFamily=windows: %v, want FAILED_PRECONDITION", st)
	}
	for _, want := range []string{`OSFamily="windows"`, `OSFamily="linux"`, "--platform OSFamily=windows"} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("refusal %q lacks %q", st.Message(), want)
		}
	}
}

// TestPlatformFlagOffersMore: --platform adds a property and replaces
// the host default of the same name.
func TestPlatformFlagOffersMore(t *testing.T) {
	c := startServer(t, "--platform", "pool=big", "--platform", "OSFamily=Linux").client()
	c.run(action{args: []string{"/bin/true"}, platform: map[string]string{"pool": "big", "OSFamily": "LINUX"}})
	response, _ := c.execute(c.newAction(action{args: []string{"/bin/true"}, platform: map[string]string{"pool": "Big"}}), false)
	if st := status.FromProto(response.Status); st.Code() != codes.FailedPrecondition {
		t.Errorf("pool=Big (not a lexicon property: exact): %v", st)
	}
}

func hostISA() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86-64"
	case "arm64":
		return "arm-a64"
	}
	return runtime.GOARCH
}
