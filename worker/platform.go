package worker

import (
	"fmt"
	"sort"
	"strings"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// platformMatcher decides whether this worker can run an action with a
// given Platform. Every property the action asks for must be one the
// worker offers, with the same value; a property the worker offers and
// the action does not mention is fine. A property may repeat with
// different values (REAPI allows it), each of which must be offered.
type platformMatcher struct {
	offered map[string]map[string]bool
	summary string
}

func newPlatformMatcher(platform *remoteexecution.Platform) *platformMatcher {
	m := &platformMatcher{offered: map[string]map[string]bool{}}
	var parts []string
	for _, p := range platform.GetProperties() {
		if m.offered[p.Name] == nil {
			m.offered[p.Name] = map[string]bool{}
		}
		m.offered[p.Name][p.Value] = true
		parts = append(parts, fmt.Sprintf("%s=%q", p.Name, p.Value))
	}
	sort.Strings(parts)
	m.summary = strings.Join(parts, ", ")
	if m.summary == "" {
		m.summary = "none"
	}
	return m
}

func (m *platformMatcher) check(platform *remoteexecution.Platform) error {
	var unmatched []string
	for _, p := range platform.GetProperties() {
		if !m.offered[p.Name][p.Value] {
			unmatched = append(unmatched, fmt.Sprintf("%s=%q", p.Name, p.Value))
		}
	}
	if len(unmatched) > 0 {
		// FAILED_PRECONDITION, as Buildbarn's scheduler answers when
		// no worker has the platform: retrying will not help.
		return status.Errorf(codes.FailedPrecondition, "No worker offers the platform properties %s; this worker offers %s", strings.Join(unmatched, ", "), m.summary)
	}
	return nil
}
