package main

import (
	"flag"
	"io"
	"testing"

	"github.com/bitzel/bitzel-worker/proto/configuration"
	"github.com/bitzel/bitzel-worker/worker"
)

func TestServePlatformDefaultsToHostAndFlagsOverride(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f serveFlags
	f.register(fs)
	if err := fs.Parse([]string{"--platform", "OSFamily=Linux", "--platform", "pool=big", "--platform", "pool=small", "--platform", "ISA="}); err != nil {
		t.Fatal(err)
	}
	offer, err := servePlatformOffer(&f)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := platformString(offer.Platform), "OSFamily=Linux,pool=big,pool=small"; got != want {
		t.Errorf("platform %s, want %s", got, want)
	}
	if offer.Matching != worker.PlatformMatchLexicon {
		t.Errorf("serve matching %v, want lexicon", offer.Matching)
	}

	var none serveFlags
	offer, err = servePlatformOffer(&none)
	if err != nil {
		t.Fatal(err)
	}
	if got := platformString(offer.Platform); got != platformString(worker.HostPlatform()) {
		t.Errorf("default platform %s, want the host's %s", got, platformString(worker.HostPlatform()))
	}
}

func TestServePlatformBadFlag(t *testing.T) {
	var p platformFlag
	if err := p.Set("novalue"); err == nil {
		t.Fatal("accepted a property without =")
	}
	if err := p.Set("=x"); err == nil {
		t.Fatal("accepted an empty name")
	}
}

func TestPlatformMatchingFromConfiguration(t *testing.T) {
	f := serveFlags{serveConfig: &configuration.ServeConfiguration{PlatformMatching: configuration.PlatformMatching_PLATFORM_MATCHING_EXACT}}
	offer, err := servePlatformOffer(&f)
	if err != nil || offer.Matching != worker.PlatformMatchExact {
		t.Fatalf("serve with EXACT: %v %v", offer.Matching, err)
	}
	offer, err = runnerPlatformOffer(0, &configuration.RunnerConfiguration{})
	if err != nil || offer.Matching != worker.PlatformMatchExact {
		t.Fatalf("worker default: %v %v", offer.Matching, err)
	}
	offer, err = runnerPlatformOffer(0, &configuration.RunnerConfiguration{PlatformMatching: configuration.PlatformMatching_PLATFORM_MATCHING_LEXICON})
	if err != nil || offer.Matching != worker.PlatformMatchLexicon {
		t.Fatalf("worker with LEXICON: %v %v", offer.Matching, err)
	}
	if _, err := runnerPlatformOffer(3, &configuration.RunnerConfiguration{PlatformMatching: 42}); err == nil {
		t.Fatal("accepted an unknown matching")
	}
}
