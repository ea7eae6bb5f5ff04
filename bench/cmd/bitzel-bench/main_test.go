package main

import (
	"errors"
	"flag"
	"testing"
)

func TestSubcommandFlagsFollowTheCLIConvention(t *testing.T) {
	if _, err := parseBuildbarnFlags([]string{"-help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("buildbarn -help: %v, want flag.ErrHelp (exit 0)", err)
	}
	var usage usageError
	if _, err := parseBuildbarnFlags([]string{"-nope"}); !errors.As(err, &usage) {
		t.Errorf("buildbarn -nope: %v, want a usageError (exit 2)", err)
	}
	if _, err := parseBuildbarnFlags([]string{"-rounds", "2"}); err != nil {
		t.Errorf("buildbarn -rounds 2: %v", err)
	}
}
