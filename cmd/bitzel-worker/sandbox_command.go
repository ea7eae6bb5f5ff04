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

const sandboxUsage = `usage: bitzel-worker sandbox --layer DIR [--layer DIR ...] [flags] -- CMD [ARGS...]

Runs CMD in fresh user, mount, pid, network, IPC and UTS namespaces, with
the exec root an overlay of the layers (the first is topmost) and writes
going to the upper directory, then prints what happened. The limits have
the names and defaults of serve's flags.

`

// sandboxFlags are the settings of `sandbox`.
type sandboxFlags struct {
	layers, mounts, env listFlag
	upper, cwd          string
	timeout             time.Duration
	limits              sandbox.Limits
	shmSize             int64
	hermetic            bool
	execRootPath        string
	dataDir             string
	seccomp             string
}

func (f *sandboxFlags) register(fs *flag.FlagSet) {
	d := defaultExecutorSettings()
	fs.Var(&f.layers, "layer", "read-only layer `DIR` of the exec root; repeat, topmost first")
	fs.Var(&f.mounts, "mount", "extra overlay `PATH=DIR[,DIR...]` at PATH in the exec root, its layers topmost first; repeat")
	fs.Var(&f.env, "env", "environment `VAR=VALUE` of the command; repeat (nothing is inherited)")
	fs.StringVar(&f.upper, "upper", "", "upper `DIR` receiving the command's writes to the exec root, kept (default: a temporary directory, removed at exit)")
	fs.StringVar(&f.cwd, "cwd", "", "working directory relative to the exec root")
	fs.DurationVar(&f.timeout, "timeout", 0, "kill every process of the command after this long (0: never)")
	// Spelled and defaulted as serve's flags (and the Jsonnet
	// sandbox fields memoryLimitBytes, maximumProcesses, cpuMillis,
	// tmpSizeBytes, shmSizeBytes).
	fs.Int64Var(&f.limits.MemoryBytes, "memory-limit", d.memoryLimit, "memory limit in `bytes` (needs cgroups; 0: none)")
	fs.Int64Var(&f.limits.MaxProcesses, "pids-limit", d.pidsLimit, "process limit (0: none)")
	fs.Int64Var(&f.limits.CPUMillis, "cpu-millis", d.cpuMillis, "CPU bandwidth in thousandths of a CPU (needs cgroups; 0: none)")
	fs.Int64Var(&f.limits.TmpSizeBytes, "tmp-size", d.tmpSize, "size of the private /tmp in `bytes`")
	fs.Int64Var(&f.shmSize, "shm-size", d.shmSize, "size of the private /dev/shm in `bytes`")
	aliasFlag(fs, "memory", "memory-limit")
	aliasFlag(fs, "pids", "pids-limit")
	fs.BoolVar(&f.hermetic, "hermetic", d.hermetic, "use the exec root as the whole root file system instead of binding the host userland")
	fs.StringVar(&f.execRootPath, "exec-root-path", d.execRootPath, "where the exec root appears inside the sandbox")
	fs.StringVar(&f.seccomp, "seccomp", string(sandbox.SeccompDefault), "system-call filter: default, allow-user-namespaces or off")
	fs.StringVar(&f.dataDir, "data-dir", d.dataDir, "the worker's data `directory` (sandbox state lives under it)")
}

// sandboxCommand runs one command the way the worker runs an action, on
// layer directories given on the command line. It is the tool for a
// person whose BitBake task fails only remotely.
func sandboxCommand(args []string) int {
	fs := newFlagSet("sandbox", sandboxUsage)
	var f sandboxFlags
	f.register(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	argv := fs.Args()
	switch {
	case len(f.layers) == 0:
		usageError("sandbox", "missing --layer DIR: the exec root is an overlay of at least one layer directory (an empty one will do)")
		return 2
	case len(argv) == 0:
		usageError("sandbox", "missing the command to run: sandbox --layer DIR [flags] -- CMD [ARGS...]")
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "bitzel-worker sandbox: "+format+"\n", a...)
		return 125
	}

	config := sandbox.Config{
		StateDir:       filepath.Join(f.dataDir, "sandbox"),
		ExecRootPath:   f.execRootPath,
		ExecRootIsRoot: f.hermetic,
		ShmSizeBytes:   f.shmSize,
		Seccomp:        sandbox.SeccompMode(f.seccomp),
	}
	overlays := &overlayDirs{}
	// Temporary uppers and work directories go, whatever happens.
	defer overlays.remove()
	spec, err := f.spec(overlays, argv)
	if err != nil {
		return fail("%v", err)
	}
	idmaps := &idmappedLayers{}
	defer func() {
		if err := idmaps.remove(); err != nil {
			fmt.Fprintf(os.Stderr, "bitzel-worker sandbox: %v\n", err)
		}
	}()
	if err := idmaps.mapLayers(spec, config); err != nil {
		fmt.Fprintf(os.Stderr, "bitzel-worker sandbox: %v (the layer is used as it is)\n", err)
	}
	warnUnmappedLayers(spec, config)

	limited := f.limits.MemoryBytes > 0 || f.limits.MaxProcesses > 0 || f.limits.CPUMillis > 0
	if limited {
		manager, err := sandbox.DetectCgroups(sandbox.CgroupsAuto, "bitzel-sandbox")
		if err != nil {
			// Without cgroups the process limit is RLIMIT_NPROC,
			// as in the worker; only the limits that are lost
			// are worth a line.
			if f.limits.MemoryBytes > 0 || f.limits.CPUMillis > 0 {
				fmt.Fprintf(os.Stderr, "bitzel-worker sandbox: no cgroups (%v): --memory-limit and --cpu-millis are not enforced\n", err)
			}
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

// spec checks the layer directories and builds the sandbox's overlays.
func (f *sandboxFlags) spec(overlays *overlayDirs, argv []string) (*sandbox.Spec, error) {
	root, err := overlays.add("", "--layer", f.layers, f.upper)
	if err != nil {
		return nil, err
	}
	spec := &sandbox.Spec{
		Mounts:           []sandbox.Mount{root},
		Argv:             argv,
		Env:              f.env,
		WorkingDirectory: f.cwd,
		Timeout:          f.timeout,
		Stdout:           os.Stdout,
		Stderr:           os.Stderr,
		Limits:           f.limits,
	}
	for _, m := range f.mounts {
		path, dirs, ok := strings.Cut(m, "=")
		if !ok || path == "" || dirs == "" {
			return nil, fmt.Errorf("--mount %q: want PATH=DIR[,DIR...]", m)
		}
		overlay, err := overlays.add(path, "--mount "+m, strings.Split(dirs, ","), "")
		if err != nil {
			return nil, err
		}
		spec.Mounts = append(spec.Mounts, overlay)
	}
	return spec, nil
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
