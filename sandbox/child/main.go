package child

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The worker binary can serve as its own sandbox init: re-executed as
// /proc/self/exe with EnvMarker set, it must become PID 1 before any
// other package initialiser runs (gRPC, metrics, ...), both for speed
// and because those start goroutines and state a PID 1 must not have.
// Go initialises a package once everything it imports is initialised,
// so this runs after the standard library and x/sys only.
func init() {
	if os.Getenv(EnvMarker) != "" {
		Main()
	}
}

// Main runs PID 1 of a sandbox and never returns. It reads its Config,
// builds the file system, runs the command, reaps every process and
// reports a Status.
func Main() {
	status := run()
	report(status)
	// The exit code of PID 1 only matters when the status pipe could
	// not be written; the parent treats a missing status as failure.
	os.Exit(0)
}

func run() *Status {
	// Inherited descriptors lose close-on-exec; the command must not
	// see the config, status or start pipes.
	for _, fd := range []int{ConfigFD, StatusFD, StartFD} {
		unix.CloseOnExec(fd)
	}
	start := time.Now()
	config, err := readConfig()
	if err != nil {
		return failure("config", err)
	}
	if config.WaitForStart {
		if err := waitForStart(); err != nil {
			return failure("start", err)
		}
	}
	if err := buildRoot(config); err != nil {
		return failure("mount", err)
	}
	if err := isolate(config); err != nil {
		return failure("isolate", err)
	}
	setup := time.Since(start)
	status := runCommand(config)
	status.SetupNanos = setup.Nanoseconds()
	return status
}

func readConfig() (*Config, error) {
	f := os.NewFile(ConfigFD, "config")
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var config Config
	if err := json.Unmarshal(data, &config); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	if len(config.Overlays) == 0 {
		return nil, fmt.Errorf("config has no exec root overlay")
	}
	if len(config.Argv) == 0 {
		return nil, fmt.Errorf("config has no command")
	}
	return &config, nil
}

func waitForStart() error {
	f := os.NewFile(StartFD, "start")
	defer f.Close()
	var b [1]byte
	if n, _ := f.Read(b[:]); n != 1 {
		return fmt.Errorf("parent did not signal start")
	}
	return nil
}

func failure(stage string, err error) *Status {
	return &Status{Stage: stage, Error: err.Error(), ExitCode: -1}
}

func report(status *Status) {
	data, err := json.Marshal(status)
	if err != nil {
		os.Exit(3)
	}
	f := os.NewFile(StatusFD, "status")
	if _, err := f.Write(data); err != nil {
		os.Exit(4)
	}
	f.Close()
}

// rusageNanos converts a timeval to nanoseconds.
func rusageNanos(tv unix.Timeval) int64 {
	return tv.Sec*1e9 + int64(tv.Usec)*1e3
}
