package worker

import (
	"fmt"
	"runtime"
	"sort"
	"strings"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PlatformMatching is how an action's platform properties are compared
// with the ones a worker offers.
type PlatformMatching int

const (
	// PlatformMatchExact is Buildbarn's rule: name and value must be
	// equal byte for byte. In a cluster bb_scheduler routes actions to
	// platform queues by exactly this comparison, so a worker that
	// matched more loosely would accept what its queue never sends.
	PlatformMatchExact PlatformMatching = iota
	// PlatformMatchLexicon compares the values of the REAPI platform
	// lexicon's properties (OSFamily, ISA) case-insensitively, as the
	// clients spell them differently: Bazel configurations send
	// OSFamily=Linux, BuildStream OSFamily=linux. Other properties
	// stay exact.
	PlatformMatchLexicon
)

// lexiconProperties are the properties of the REAPI platform lexicon
// whose values PlatformMatchLexicon compares case-insensitively.
var lexiconProperties = map[string]bool{"OSFamily": true, "ISA": true}

// PlatformOffer is what a worker offers and how actions are matched
// against it.
type PlatformOffer struct {
	Platform *remoteexecution.Platform
	Matching PlatformMatching
	// HowToOffer tells an operator how to offer the properties, each
	// NAME=VALUE, that an action asked for and the worker lacks (for
	// serve: the flags to add). Nil: no advice.
	HowToOffer func(properties []string) string
	// ContainerImages, when set, decides the container-image property
	// instead of Platform: nil for an image the operator made
	// available locally, else an error saying how to provide it. Left
	// nil in cluster mode, where bb_scheduler routes by exact platform
	// and the property must be offered literally.
	ContainerImages func(value string) error
}

// ContainerImageProperty names the image an action runs in
// (docker://NAME[:TAG|@DIGEST]), as Bazel and remote-apis-sdks send it.
const ContainerImageProperty = "container-image"

// HostPlatform is what this machine is, in the REAPI platform
// lexicon's spelling (OSFamily=linux, ISA=x86-64), sorted as REAPI
// requires. An architecture the lexicon does not name is given as Go
// names it.
func HostPlatform() *remoteexecution.Platform {
	isa := map[string]string{
		"amd64":   "x86-64",
		"386":     "x86-32",
		"arm64":   "arm-a64",
		"arm":     "arm-a32",
		"ppc64":   "power-isa-be",
		"ppc64le": "power-isa-le",
		"sparc64": "sparc-v9",
	}[runtime.GOARCH]
	if isa == "" {
		isa = runtime.GOARCH
	}
	osFamily := runtime.GOOS
	if osFamily == "darwin" {
		osFamily = "macos"
	}
	return &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{
		{Name: "ISA", Value: isa},
		{Name: "OSFamily", Value: osFamily},
	}}
}

// SortPlatform sorts properties by name, then value, as REAPI requires
// of a Platform.
func SortPlatform(platform *remoteexecution.Platform) {
	sort.SliceStable(platform.Properties, func(i, j int) bool {
		a, b := platform.Properties[i], platform.Properties[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Value < b.Value
	})
}

// platformMatcher decides whether this worker can run an action with a
// given Platform. Every property the action asks for must be one the
// worker offers, with a matching value; a property the worker offers
// and the action does not mention is fine. A property may repeat with
// different values (REAPI allows it), each of which must be offered.
type platformMatcher struct {
	offer   PlatformOffer
	offered map[string]map[string]bool
	summary string
}

func newPlatformMatcher(offer PlatformOffer) *platformMatcher {
	m := &platformMatcher{offer: offer, offered: map[string]map[string]bool{}}
	var parts []string
	for _, p := range offer.Platform.GetProperties() {
		if m.offered[p.Name] == nil {
			m.offered[p.Name] = map[string]bool{}
		}
		m.offered[p.Name][m.normalise(p.Name, p.Value)] = true
		parts = append(parts, fmt.Sprintf("%s=%q", p.Name, p.Value))
	}
	sort.Strings(parts)
	m.summary = strings.Join(parts, ", ")
	if m.summary == "" {
		m.summary = "none"
	}
	return m
}

// normalise is the form of a value that matching compares.
func (m *platformMatcher) normalise(name, value string) string {
	if m.offer.Matching == PlatformMatchLexicon && lexiconProperties[name] {
		return strings.ToLower(value)
	}
	return value
}

func (m *platformMatcher) check(platform *remoteexecution.Platform) error {
	var unmatched, toOffer []string
	for _, p := range platform.GetProperties() {
		if p.Name == ContainerImageProperty && m.offer.ContainerImages != nil {
			if err := m.offer.ContainerImages(p.Value); err != nil {
				return err
			}
			continue
		}
		if !m.offered[p.Name][m.normalise(p.Name, p.Value)] {
			unmatched = append(unmatched, fmt.Sprintf("%s=%q", p.Name, p.Value))
			toOffer = append(toOffer, p.Name+"="+p.Value)
		}
	}
	if len(unmatched) == 0 {
		return nil
	}
	rule := "names and values must match exactly, as bb_scheduler matches them"
	if m.offer.Matching == PlatformMatchLexicon {
		rule = "values of OSFamily and ISA match case-insensitively, others exactly"
	}
	message := fmt.Sprintf("This worker does not offer the platform properties %s the action asks for; it offers %s (%s)",
		strings.Join(unmatched, ", "), m.summary, rule)
	if m.offer.HowToOffer != nil {
		message += "; to offer them, " + m.offer.HowToOffer(toOffer)
	}
	// FAILED_PRECONDITION, as Buildbarn's scheduler answers when no
	// worker has the platform: retrying will not help.
	return status.Error(codes.FailedPrecondition, message)
}
