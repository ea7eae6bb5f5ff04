// Command bitzel-worker is a Remote Execution API v2 worker: it runs
// actions in rootless namespace sandboxes on overlays of cached layers.
package main

import (
	"fmt"
	"os"

	// Imported first for its package initialiser: a worker binary
	// re-executed as a sandbox's PID 1 must dispatch before anything
	// else starts.
	_ "github.com/bitzel/bitzel-worker/sandbox/child"
)

const usage = `usage: bitzel-worker COMMAND [flags]

commands:
  serve     serve the Remote Execution API and run actions on this machine (zero config)
  worker    join a Buildbarn cluster: take actions from bb_scheduler (--config FILE.jsonnet)
  submit    run a task on a REAPI endpoint: upload inputs, execute, fetch outputs
  sandbox   run one command in a sandbox on layer directories, for debugging
  version   print the version

Run "bitzel-worker COMMAND -h" for the flags of a command.
`

// commands maps a subcommand to its entry point, which returns the
// process exit code.
var commands = map[string]func(args []string) int{
	"serve":   serveCommand,
	"worker":  workerCommand,
	"submit":  submitCommand,
	"sandbox": sandboxCommand,
	"version": func([]string) int { fmt.Println("bitzel-worker", version); return 0 },
}

// version is set by the linker for releases.
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	command, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "bitzel-worker: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	os.Exit(command(os.Args[2:]))
}
