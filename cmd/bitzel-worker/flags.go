package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// newFlagSet returns a subcommand's flag set whose usage is the text
// followed by the visible flags. parseFlags decides where it goes.
func newFlagSet(name, text string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), text)
		printVisibleDefaults(fs)
	}
	return fs
}

// parseFlags parses a subcommand's flags the way common CLIs do: -h
// and --help print the usage on stdout (exit 0); an unknown or bad
// flag is one line on stderr naming it (exit 2). ok is false when the
// command must return code at once.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	// The flag package prints the error and the whole usage to the
	// output on failure; that is replaced by one line below.
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(os.Stderr)
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(os.Stdout)
		fs.Usage()
		fs.SetOutput(os.Stderr)
		return 0, false
	default:
		usageError(fs.Name(), "%v", err)
		return 2, false
	}
}

// usageError prints the one line of a command-line mistake, with where
// to read the usage.
func usageError(command, format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bitzel-worker %s: %s (see \"bitzel-worker %s -h\")\n", command, fmt.Sprintf(format, a...), command)
}

// hiddenFlags are old spellings still accepted but not shown, per flag
// set: scripts written against them keep working.
var hiddenFlags = map[*flag.FlagSet]map[string]bool{}

// aliasFlag makes old a hidden second spelling of the flag name.
func aliasFlag(fs *flag.FlagSet, old, name string) {
	fs.Var(fs.Lookup(name).Value, old, "old spelling of -"+name)
	if hiddenFlags[fs] == nil {
		hiddenFlags[fs] = map[string]bool{}
	}
	hiddenFlags[fs][old] = true
}

// printVisibleDefaults is fs.PrintDefaults without the hidden aliases.
func printVisibleDefaults(fs *flag.FlagSet) {
	visible := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	visible.SetOutput(fs.Output())
	fs.VisitAll(func(f *flag.Flag) {
		if hiddenFlags[fs][f.Name] {
			return
		}
		visible.Var(f.Value, f.Name, f.Usage)
		// The default, not what -h followed on the command line.
		visible.Lookup(f.Name).DefValue = f.DefValue
	})
	visible.PrintDefaults()
}
