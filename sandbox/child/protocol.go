package child

import (
	"fmt"
	"os"
)

// ProtocolVersion names the shape of what the worker and a sandbox's
// PID 1 exchange (Prepare, Action, Mount and Status in wire.go's
// binary form, LauncherConfig and ExitNotice as JSON). Version 3 is
// the binary form; version 4 is PID 1 serving one action after
// another (a control socket, data roots, Status.Retire). An init binary from another build that speaks
// another shape misreads it (a renamed field reads as absent), so the
// worker asks a separate init binary for its version before using it.
// TestProtocolShapeIsPinned fails when the shape changes without this
// number.
const ProtocolVersion = 4

// ProtocolQueryEnv makes the init binary print ProtocolVersion and
// exit, instead of becoming PID 1.
const ProtocolQueryEnv = "BITZEL_SANDBOX_INIT_PROTOCOL_QUERY"

func answerProtocolQuery() {
	if os.Getenv(ProtocolQueryEnv) != "" {
		fmt.Println(ProtocolVersion)
		os.Exit(0)
	}
}
