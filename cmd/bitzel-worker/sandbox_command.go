package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bitzel/bitzel-worker/sandbox"
)

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// sandboxCommand runs one command exactly as the worker would run an
// action, on layer directories given on the command line. It is the
// tool for a person whose BitBake task fails only remotely.
func sandboxCommand(args []string) int {
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: bitzel-worker sandbox --layer DIR [--layer DIR ...] [flags] -- CMD [ARGS...]

Runs CMD in fresh user, mount, pid, network, IPC and UTS namespaces, with
the exec root an overlay of the layers (the first is topmost) and writes
going to the upper directory, then prints what happened.

`)
		fs.PrintDefaults()
	}
	var layers, mounts, env listFlag
	fs.Var(&layers, "layer", "read-only layer `DIR` of the exec root; repeat, topmost first")
	fs.Var(&mounts, "mount", "extra overlay `PATH=DIR[,DIR...]` at PATH in the exec root, its layers topmost first; repeat")
	fs.Var(&env, "env", "environment `VAR=VALUE` of the command; repeat (nothing is inherited)")
	upper := fs.String("upper", "", "upper `DIR` receiving the command's writes (default: a new temporary directory, kept)")
	cwd := fs.String("cwd", "", "working directory relative to the exec root")
	timeout := fs.Duration("timeout", 0, "kill every process of the command after this long (0: never)")
	memory := fs.Int64("memory", 0, "memory limit in bytes (needs cgroups)")
	pids := fs.Int64("pids", 0, "process limit")
	tmpSize := fs.Int64("tmp-size", 1<<30, "size limit of the private /tmp in bytes")
	hermetic := fs.Bool("hermetic", false, "use the exec root as the whole root file system instead of binding the host userland")
	execRoot := fs.String("exec-root-path", sandbox.DefaultExecRootPath, "where the exec root appears inside the sandbox")
	dataDir := fs.String("data-dir", defaultDataDir(), "the worker's data directory (sandbox state lives under it)")
	seccompMode := fs.String("seccomp", string(sandbox.SeccompDefault), "system-call filter: default, allow-user-namespaces or off")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	argv := fs.Args()
	if len(argv) == 0 || len(layers) == 0 {
		fs.Usage()
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "bitzel-worker sandbox: "+format+"\n", a...)
		return 125
	}

	var cleanups []string
	defer func() {
		for _, dir := range cleanups {
			sandbox.RemoveAll(dir)
		}
	}()
	newOverlay := func(path string, layerDirs []string, upperDir string) (sandbox.Mount, error) {
		m := sandbox.Mount{Path: path}
		for _, layer := range layerDirs {
			abs, err := filepath.Abs(layer)
			if err != nil {
				return m, err
			}
			m.Layers = append(m.Layers, abs)
		}
		if upperDir == "" {
			dir, err := os.MkdirTemp("", "bitzel-upper-")
			if err != nil {
				return m, err
			}
			// The upper's mode is the exec root's mode.
			if err := os.Chmod(dir, 0o755); err != nil {
				return m, err
			}
			upperDir = dir
			fmt.Fprintf(os.Stderr, "bitzel-worker sandbox: writes under %q go to %s\n", "/"+path, upperDir)
		}
		upperDir, err := filepath.Abs(upperDir)
		if err != nil {
			return m, err
		}
		if err := os.MkdirAll(upperDir, 0o755); err != nil {
			return m, err
		}
		// The work directory must be on the upper's file system.
		work, err := os.MkdirTemp(filepath.Dir(upperDir), ".bitzel-work-")
		if err != nil {
			return m, err
		}
		cleanups = append(cleanups, work)
		m.UpperDir, m.WorkDir = upperDir, work
		return m, nil
	}

	root, err := newOverlay("", layers, *upper)
	if err != nil {
		return fail("%v", err)
	}
	spec := &sandbox.Spec{
		Mounts:           []sandbox.Mount{root},
		Argv:             argv,
		Env:              env,
		WorkingDirectory: *cwd,
		Timeout:          *timeout,
		Stdout:           os.Stdout,
		Stderr:           os.Stderr,
		Limits:           sandbox.Limits{MemoryBytes: *memory, MaxProcesses: *pids, TmpSizeBytes: *tmpSize},
	}
	for _, m := range mounts {
		path, dirs, ok := strings.Cut(m, "=")
		if !ok || path == "" || dirs == "" {
			return fail("--mount %q: want PATH=DIR[,DIR...]", m)
		}
		overlay, err := newOverlay(path, strings.Split(dirs, ","), "")
		if err != nil {
			return fail("%v", err)
		}
		spec.Mounts = append(spec.Mounts, overlay)
	}

	config := sandbox.Config{
		StateDir:       filepath.Join(*dataDir, "sandbox"),
		ExecRootPath:   *execRoot,
		ExecRootIsRoot: *hermetic,
		Seccomp:        sandbox.SeccompMode(*seccompMode),
	}
	if *memory > 0 || *pids > 0 {
		manager, err := sandbox.DetectCgroups(sandbox.CgroupsAuto, "bitzel-sandbox")
		if err != nil {
			fmt.Fprintf(os.Stderr, "bitzel-worker sandbox: no cgroups (%v); the memory limit is not enforced, processes are limited by RLIMIT_NPROC\n", err)
		} else {
			config.Cgroups = manager
		}
	}
	runner, err := sandbox.NewNamespaceRunner(config)
	if err != nil {
		return fail("%v", err)
	}
	defer runner.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	result, err := runner.Run(ctx, spec)
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintln(os.Stderr, describeResult(result))
	if result.TimedOut {
		return 124
	}
	return result.ExitCode
}

func describeResult(r *sandbox.Result) string {
	var b strings.Builder
	b.WriteString("bitzel-worker sandbox: ")
	switch {
	case r.TimedOut:
		b.WriteString("timed out, every process killed")
	case r.OOMKilled:
		b.WriteString("killed for exceeding its memory limit")
	case r.Signal != 0:
		fmt.Fprintf(&b, "killed by signal %d (%v)", r.Signal, r.Signal)
	default:
		fmt.Fprintf(&b, "exit code %d", r.ExitCode)
	}
	fmt.Fprintf(&b, "; wall %v (sandbox setup %v), user %v, system %v, peak RSS %.1f MiB",
		r.WallTime.Round(time.Microsecond), r.SetupTime.Round(time.Microsecond),
		r.UserTime.Round(time.Microsecond), r.SystemTime.Round(time.Microsecond), float64(r.PeakRSSBytes)/(1<<20))
	if r.StdoutTruncated || r.StderrTruncated {
		b.WriteString("; output truncated")
	}
	return b.String()
}
