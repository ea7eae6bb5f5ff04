package main

import (
	"fmt"
	"strings"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/proto/configuration"
	"github.com/bitzel/bitzel-worker/worker"
)

// platformFlag collects serve's repeatable --platform NAME=VALUE.
type platformFlag []*remoteexecution.Platform_Property

func (f *platformFlag) String() string {
	var parts []string
	for _, p := range *f {
		parts = append(parts, p.Name+"="+p.Value)
	}
	return strings.Join(parts, " ")
}

func (f *platformFlag) Set(value string) error {
	name, v, ok := strings.Cut(value, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q is not NAME=VALUE", value)
	}
	*f = append(*f, &remoteexecution.Platform_Property{Name: name, Value: v})
	return nil
}

// overridePlatform applies properties over base: a name given in
// properties replaces all of base's values of that name (an empty value
// removes it), other names are added. A name may be given several
// times, for several values.
func overridePlatform(base *remoteexecution.Platform, properties []*remoteexecution.Platform_Property) *remoteexecution.Platform {
	given := map[string]bool{}
	for _, p := range properties {
		given[p.Name] = true
	}
	result := &remoteexecution.Platform{}
	for _, p := range base.GetProperties() {
		if !given[p.Name] {
			result.Properties = append(result.Properties, p)
		}
	}
	for _, p := range properties {
		if p.Value != "" {
			result.Properties = append(result.Properties, &remoteexecution.Platform_Property{Name: p.Name, Value: p.Value})
		}
	}
	worker.SortPlatform(result)
	return result
}

// servePlatformOffer is what serve offers: the host, then the
// configuration file's properties, then the flags'.
func servePlatformOffer(f *serveFlags) (worker.PlatformOffer, error) {
	platform := worker.HostPlatform()
	platform = overridePlatform(platform, f.serveConfig.GetPlatform().GetProperties())
	platform = overridePlatform(platform, f.platform)
	matching, err := platformMatching(f.serveConfig.GetPlatformMatching(), worker.PlatformMatchLexicon)
	if err != nil {
		return worker.PlatformOffer{}, fmt.Errorf("platformMatching: %w", err)
	}
	return worker.PlatformOffer{
		Platform: platform,
		Matching: matching,
		HowToOffer: func(properties []string) string {
			return "start serve with --platform " + strings.Join(properties, " --platform ")
		},
	}, nil
}

// platformMatching turns the configuration's enum into the executor's
// rule; PLATFORM_MATCHING_DEFAULT is the command's own default.
func platformMatching(m configuration.PlatformMatching, defaultMatching worker.PlatformMatching) (worker.PlatformMatching, error) {
	switch m {
	case configuration.PlatformMatching_PLATFORM_MATCHING_DEFAULT:
		return defaultMatching, nil
	case configuration.PlatformMatching_PLATFORM_MATCHING_EXACT:
		return worker.PlatformMatchExact, nil
	case configuration.PlatformMatching_PLATFORM_MATCHING_LEXICON:
		return worker.PlatformMatchLexicon, nil
	}
	return 0, fmt.Errorf("unknown platform matching %v", m)
}
