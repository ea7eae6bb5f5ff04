package main

import (
	"fmt"
	"runtime/debug"
)

// version and commit may be set by the linker (-ldflags "-X
// main.version=... -X main.commit=..."), as scripts/test.sh and
// docker/Dockerfile do: they build with -buildvcs=false (the build
// context has no .git), so the build information has no commit.
var version, commit string

func versionCommand(args []string) int {
	fs := newFlagSet("version", "usage: bitzel-worker version\n\nPrints the module version and the commit the binary was built from.\n")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		usageError("version", "unexpected arguments %q", fs.Args())
		return 2
	}
	info, _ := debug.ReadBuildInfo()
	fmt.Println(versionString(info, version, commit))
	return 0
}

// versionString is "bitzel-worker VERSION (commit COMMIT[, modified])"
// from what the linker set, else from the build information: the
// module version is "(devel)" for a build inside the repository, a
// tag or pseudo-version for "go install MODULE@VERSION"; the commit
// is the vcs.revision Go records when it builds with VCS stamping.
func versionString(info *debug.BuildInfo, linkedVersion, linkedCommit string) string {
	moduleVersion, revision, modified := "unknown", "", false
	if info != nil {
		if info.Main.Version != "" {
			moduleVersion = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if linkedVersion != "" {
		moduleVersion = linkedVersion
	}
	if linkedCommit != "" {
		revision, modified = linkedCommit, false
	}
	switch {
	case revision == "":
		revision = "unknown (built with -buildvcs=false or outside a git checkout, and without -ldflags -X main.commit=...)"
	case modified:
		revision += " (modified)"
	}
	return fmt.Sprintf("bitzel-worker %s, commit %s", moduleVersion, revision)
}
