package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
)

// The baselines: what the same workload costs without a worker, timed
// in the same run, interleaved with the worker's measurements.

// timed runs argv and returns its wall time and the CPU time of it and
// the children it reaped.
func timed(argv ...string) (time.Duration, time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("%v: %v: %s", argv, err, out)
	}
	return elapsed, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

func forkExecTrue() (time.Duration, time.Duration, error) { return timed("/bin/true") }

// bwrapArgs sandboxes a command the way bubblewrap users do: every
// namespace, the host read-only, fresh /dev and /proc.
func bwrapArgs(argv ...string) []string {
	return append([]string{"bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"}, argv...)
}

func bwrapTrue() (time.Duration, time.Duration, error) { return timed(bwrapArgs("true")...) }

// cpTree times `cp flag src dst` (-a: a copy, what a worker without a
// file cache does; -al: a hardlink farm, what Buildbarn's native build
// directory does per action), removing dst outside the measurement.
func cpTree(flag, src, scratch string) (time.Duration, error) {
	dst := filepath.Join(scratch, "cp-dst")
	fsutil.RemoveAll(dst)
	settle()
	d, _, err := timed("cp", flag, src, dst)
	fsutil.RemoveAll(dst)
	return d, err
}

// sha256Tree times hashing every file under dir with sha256sum: the
// least a worker pays to learn the digests of outputs.
func sha256Tree(dir string) (time.Duration, error) {
	settle()
	d, _, err := timed("sh", "-c", `find "$1" -type f -print0 | xargs -0 sha256sum >/dev/null`, "sh", dir)
	return d, err
}

func haveBwrap() bool {
	if _, err := exec.LookPath("bwrap"); err != nil {
		return false
	}
	_, _, err := bwrapTrue()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bubblewrap does not run here (%v); its baselines are skipped\n", err)
	}
	return err == nil
}

// settle writes back dirty pages before a measurement, so that neither
// side pays for the writeback of what the other just wrote.
func settle() { syscall.Sync() }
