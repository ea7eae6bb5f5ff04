package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// reexecSubcommandInNetns runs `self SUBCOMMAND args` again inside
// `unshare -n`, passing signals on (the buildbarn and bazel subcommands: fixed ports,
// nothing reachable from outside).
func reexecSubcommandInNetns(subcommand string, args []string) error {
	if os.Getuid() != 0 {
		return fmt.Errorf("unshare -n needs root; run as root, or with -netns=false")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command("unshare", append([]string{"-n", "--", "sh", "-c", `ip link set lo up && exec "$@"`, "sh", self, subcommand}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "BITZEL_BENCH_NETNS=1")
	if err := cmd.Start(); err != nil {
		return err
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		for sig := range signals {
			cmd.Process.Signal(sig)
		}
	}()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("in unshare -n: %w", err)
	}
	return nil
}
