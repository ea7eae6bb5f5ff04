package worker

import (
	"runtime"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func platformOf(kv ...string) *remoteexecution.Platform {
	p := &remoteexecution.Platform{}
	for i := 0; i < len(kv); i += 2 {
		p.Properties = append(p.Properties, &remoteexecution.Platform_Property{Name: kv[i], Value: kv[i+1]})
	}
	return p
}

func TestHostPlatformIsLexiconSpelling(t *testing.T) {
	p := HostPlatform()
	got := map[string]string{}
	for _, prop := range p.Properties {
		got[prop.Name] = prop.Value
	}
	if runtime.GOOS == "linux" && got["OSFamily"] != "linux" {
		t.Errorf("OSFamily = %q, want linux", got["OSFamily"])
	}
	if runtime.GOARCH == "amd64" && got["ISA"] != "x86-64" {
		t.Errorf("ISA = %q, want x86-64", got["ISA"])
	}
	if p.Properties[0].Name != "ISA" || p.Properties[1].Name != "OSFamily" {
		t.Errorf("properties not sorted by name: %v", p.Properties)
	}
}

func TestPlatformLexiconMatchingIsCaseInsensitive(t *testing.T) {
	m := newPlatformMatcher(PlatformOffer{Platform: platformOf("ISA", "x86-64", "OSFamily", "linux", "pool", "big"), Matching: PlatformMatchLexicon})
	for _, p := range []*remoteexecution.Platform{
		nil,
		platformOf("OSFamily", "Linux"), // Bazel
		platformOf("ISA", "x86-64", "OSFamily", "linux"), // BuildStream
		platformOf("ISA", "X86-64", "OSFamily", "LINUX"),
		platformOf("pool", "big"),
	} {
		if err := m.check(p); err != nil {
			t.Errorf("%v: %v", p, err)
		}
	}
	// Only the lexicon's properties are compared loosely.
	if err := m.check(platformOf("pool", "Big")); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("pool=Big: %v, want FAILED_PRECONDITION", err)
	}
}

func TestPlatformExactMatchingAsBuildbarn(t *testing.T) {
	m := newPlatformMatcher(PlatformOffer{Platform: platformOf("OSFamily", "linux")})
	if err := m.check(platformOf("OSFamily", "linux")); err != nil {
		t.Fatal(err)
	}
	err := m.check(platformOf("OSFamily", "Linux"))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "match exactly") {
		t.Fatalf("OSFamily=Linux in exact mode: %v", err)
	}
}

func TestPlatformRefusalNamesPropertyOfferAndFlag(t *testing.T) {
	m := newPlatformMatcher(PlatformOffer{
		Platform: platformOf("ISA", "x86-64", "OSFamily", "linux"),
		Matching: PlatformMatchLexicon,
		HowToOffer: func(properties []string) string {
			return "start serve with --platform " + strings.Join(properties, " --platform ")
		},
	})
	err := m.check(platformOf("OSFamily", "windows", "ISA", "x86-64", "container-image", "docker://x"))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v, want FAILED_PRECONDITION", err)
	}
	for _, want := range []string{
		`OSFamily="windows"`, `container-image="docker://x"`,
		`offers ISA="x86-64", OSFamily="linux"`,
		"start serve with --platform OSFamily=windows --platform container-image=docker://x",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err.Error(), want)
		}
	}
	if strings.Contains(err.Error(), `ISA="x86-64" the action`) {
		t.Errorf("message names an offered property as missing: %v", err)
	}
}

func TestPlatformRepeatedPropertyNeedsEveryValue(t *testing.T) {
	m := newPlatformMatcher(PlatformOffer{Platform: platformOf("cap", "a", "cap", "b"), Matching: PlatformMatchLexicon})
	if err := m.check(platformOf("cap", "a", "cap", "b")); err != nil {
		t.Fatal(err)
	}
	if err := m.check(platformOf("cap", "a", "cap", "c")); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("cap=c: %v", err)
	}
}

func TestPlatformNoneOffered(t *testing.T) {
	err := newPlatformMatcher(PlatformOffer{}).check(platformOf("OSFamily", "linux"))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "offers none") {
		t.Fatalf("%v", err)
	}
}
