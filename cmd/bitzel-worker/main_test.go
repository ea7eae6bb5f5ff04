package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// The test binary is also the command: with this variable set it runs
// main's dispatch on its arguments, so that the tests see exit codes
// and the two streams as a user does.
const runAsCommandEnv = "BITZEL_WORKER_TEST_RUN_AS_COMMAND"

func TestMain(m *testing.M) {
	if os.Getenv(runAsCommandEnv) != "" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

type commandOutcome struct {
	code           int
	stdout, stderr string
}

func runCommand(t *testing.T, env []string, args ...string) commandOutcome {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), runAsCommandEnv+"=1"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("%q: %v", args, err)
	}
	return commandOutcome{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

func TestHelpGoesToStdoutAndExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"-help"}, {"help"}, {"help", "serve"},
		{"serve", "-h"}, {"serve", "--help"}, {"worker", "-h"}, {"submit", "-h"},
		{"sandbox", "--help"}, {"version", "-h"},
	} {
		o := runCommand(t, nil, args...)
		if o.code != 0 || !strings.HasPrefix(o.stdout, "usage: bitzel-worker") || o.stderr != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want the usage on stdout and exit 0", args, o.code, o.stdout, o.stderr)
		}
	}
}

// A mistake on the command line is one line on stderr that names it,
// and exit code 2.
func TestCommandLineMistakesAreOneLineNamingThem(t *testing.T) {
	for _, c := range []struct {
		args  []string
		names string
	}{
		{[]string{"nope"}, `unknown command "nope"`},
		{[]string{"help", "nope"}, `unknown command "nope"`},
		{[]string{"serve", "--bogus"}, "-bogus"},
		{[]string{"serve", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"worker"}, "missing --config"},
		{[]string{"submit", "--timeout", "soon", "--", "true"}, "-timeout"},
		{[]string{"submit"}, "missing the command"},
		{[]string{"sandbox", "--", "true"}, "missing --layer"},
		{[]string{"sandbox", "--layer", "."}, "missing the command"},
		{[]string{"sandbox", "--memory-limt", "1", "--layer", ".", "--", "true"}, "-memory-limt"},
		{[]string{"version", "extra"}, "unexpected arguments"},
	} {
		o := runCommand(t, nil, c.args...)
		lines := strings.Split(strings.TrimSuffix(o.stderr, "\n"), "\n")
		if o.code != 2 || o.stdout != "" || len(lines) != 1 || !strings.Contains(o.stderr, c.names) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and one line naming %s", c.args, o.code, o.stdout, o.stderr, c.names)
		}
	}
	if o := runCommand(t, nil); o.code != 2 || !strings.HasPrefix(o.stderr, "usage:") {
		t.Errorf("no arguments: exit %d, stderr %q; want the usage on stderr and exit 2", o.code, o.stderr)
	}
}

// Flags that mean the same thing in serve and sandbox have one spelling
// and one default.
func TestSandboxAndServeFlagsAgree(t *testing.T) {
	serveFlagSet := flag.NewFlagSet("serve", flag.ContinueOnError)
	var s serveFlags
	s.register(serveFlagSet)
	sandboxFlagSet := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	var b sandboxFlags
	b.register(sandboxFlagSet)
	for _, name := range []string{"memory-limit", "pids-limit", "cpu-millis", "tmp-size", "shm-size", "hermetic", "exec-root-path", "data-dir"} {
		serveFlag, sandboxFlag := serveFlagSet.Lookup(name), sandboxFlagSet.Lookup(name)
		if serveFlag == nil || sandboxFlag == nil {
			t.Errorf("-%s: serve has %v, sandbox has %v", name, serveFlag != nil, sandboxFlag != nil)
			continue
		}
		if serveFlag.DefValue != sandboxFlag.DefValue {
			t.Errorf("-%s: serve's default is %s, sandbox's %s", name, serveFlag.DefValue, sandboxFlag.DefValue)
		}
	}
	// The old spellings still parse, and are not shown.
	if err := sandboxFlagSet.Parse([]string{"-memory", "5", "-pids", "7"}); err != nil || b.limits.MemoryBytes != 5 || b.limits.MaxProcesses != 7 {
		t.Errorf("old spellings: %v, limits %+v", err, b.limits)
	}
	o := runCommand(t, nil, "sandbox", "-h")
	if strings.Contains(o.stdout, "-memory ") || strings.Contains(o.stdout, "-pids ") || !strings.Contains(o.stdout, "-memory-limit bytes") {
		t.Errorf("sandbox -h shows the hidden aliases or not the flags:\n%s", o.stdout)
	}
}

func TestVersionNamesModuleAndCommit(t *testing.T) {
	stamped := &debug.BuildInfo{Main: debug.Module{Path: "github.com/bitzel/bitzel-worker", Version: "v0.0.0-20261202063000-522d47a1b2c3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "522d47a1b2c3"}, {Key: "vcs.modified", Value: "true"}}}
	plain := &debug.BuildInfo{Main: debug.Module{Path: "github.com/bitzel/bitzel-worker", Version: "(devel)"}}
	for _, c := range []struct {
		info                   *debug.BuildInfo
		linkedVersion, linkedC string
		want                   string
	}{
		{stamped, "", "", "bitzel-worker v0.0.0-20261202063000-522d47a1b2c3, commit 522d47a1b2c3 (modified)"},
		{plain, "", "abc123", "bitzel-worker (devel), commit abc123"},
		{plain, "v1.2.3", "abc123", "bitzel-worker v1.2.3, commit abc123"},
		{plain, "", "", "bitzel-worker (devel), commit unknown ("},
	} {
		if got := versionString(c.info, c.linkedVersion, c.linkedC); !strings.HasPrefix(got, c.want) {
			t.Errorf("versionString(%v, %q, %q) = %q, want %q", c.info.Settings, c.linkedVersion, c.linkedC, got, c.want)
		}
	}
	if o := runCommand(t, nil, "version"); o.code != 0 || !strings.HasPrefix(o.stdout, "bitzel-worker ") || strings.Contains(o.stdout, "dev\n") {
		t.Errorf("version: exit %d, %q", o.code, o.stdout)
	}
}

// searchableTempDir is a temporary directory the ids of a root
// sandbox (host uids 1000000000..) can search.
func searchableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bitzel-cmd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sandbox names a missing layer and what to do about it, and leaves no
// temporary upper or work directory behind, whether the command ran,
// failed, or could not start.
func TestSandboxCommandMessagesAndCleanup(t *testing.T) {
	base := searchableTempDir(t)
	tmp, layer, dataDir := filepath.Join(base, "tmp"), filepath.Join(base, "layer"), filepath.Join(base, "data")
	for _, dir := range []string{tmp, layer, dataDir} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(layer, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"TMPDIR=" + tmp}
	sandbox := func(args ...string) commandOutcome {
		return runCommand(t, env, append([]string{"sandbox", "--data-dir", dataDir}, args...)...)
	}

	o := sandbox("--layer", filepath.Join(base, "nonexistent"), "--", "true")
	if o.code != 125 || !strings.Contains(o.stderr, "--layer: layer directory "+filepath.Join(base, "nonexistent")+" does not exist") {
		t.Errorf("missing layer: exit %d, stderr %q", o.code, o.stderr)
	}
	o = sandbox("--layer", layer, "--mount", "sub="+filepath.Join(base, "nonexistent"), "--", "true")
	if o.code != 125 || !strings.Contains(o.stderr, "--mount sub=") {
		t.Errorf("missing mount layer: exit %d, stderr %q", o.code, o.stderr)
	}
	// The layer belongs to the test's user (root in a root run): the
	// command sees its files as its root's, as an action sees the
	// worker's layers (rootless through the id map, as root through
	// an idmapped mount), and can change them (copied up).
	o = sandbox("--layer", layer, "--", "/bin/sh", "-c", "cat file; stat -c %u:%g file; echo y >> file && cat file; echo new > new; exit 3")
	if o.code != 3 || o.stdout != "x0:0\nxy\n" {
		t.Errorf("sandbox run: exit %d, stdout %q, stderr %q; want the layer's file owned by 0:0 and writable", o.code, o.stdout, o.stderr)
	}
	if strings.Contains(o.stderr, "nobody:nogroup") {
		t.Errorf("as uid %d, warned about the layer's owner: stderr %q", os.Geteuid(), o.stderr)
	}
	if data, _ := os.ReadFile(filepath.Join(layer, "file")); string(data) != "x" {
		t.Errorf("the layer itself was changed: %q", data)
	}
	o = sandbox("--layer", layer, "--mount", "sub="+layer, "--", "/nonexistent-command")
	if o.code != 127 {
		t.Errorf("missing command: exit %d, stderr %q", o.code, o.stderr)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("sandbox left %v in its TMPDIR", left)
	}
}
