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
  version   print the module version and the commit it was built from
  help      print this text; "help COMMAND" prints the flags of a command

Run "bitzel-worker COMMAND -h" for the flags of a command.
`

// commands maps a subcommand to its entry point, which returns the
// process exit code.
var commands = map[string]func(args []string) int{
	"serve":   serveCommand,
	"worker":  workerCommand,
	"submit":  submitCommand,
	"sandbox": sandboxCommand,
	"version": versionCommand,
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case holdUserNamespaceCommand:
		return holdUserNamespace()
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			// "help serve" is "serve -h".
			if command, ok := commands[args[1]]; ok {
				return command([]string{"-h"})
			}
			return unknownCommand(args[1])
		}
		fmt.Print(usage)
		return 0
	}
	command, ok := commands[args[0]]
	if !ok {
		return unknownCommand(args[0])
	}
	return command(args[1:])
}

func unknownCommand(name string) int {
	fmt.Fprintf(os.Stderr, "bitzel-worker: unknown command %q (see \"bitzel-worker help\")\n", name)
	return 2
}
