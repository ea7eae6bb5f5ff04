// Command bitzel-sandbox-init is PID 1 of every sandbox. The worker
// can re-execute itself for this, but a binary this small starts
// several times faster than the worker, which links gRPC and
// bb-storage; the worker prefers it when installed next to itself.
package main

import (
	"fmt"
	"os"

	"github.com/bitzel/bitzel-worker/sandbox/child"
)

func main() {
	child.Dispatch()
	fmt.Fprintf(os.Stderr, "%s is started by bitzel-worker, not by hand\n", child.InitBinaryName)
	os.Exit(2)
}
