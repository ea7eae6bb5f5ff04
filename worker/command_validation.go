package worker

import (
	"fmt"
	"strings"
	"unicode/utf8"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kernel limits on what execve(2) takes. A Command beyond them would
// fail deep in the sandbox with E2BIG or EINVAL, which is the client's
// mistake, not the worker's: it is refused up front, naming the field.
const (
	// maxArgStrlen is MAX_ARG_STRLEN: 32 pages, per argument or
	// "NAME=value" string, NUL included.
	maxArgStrlen = 32 * 4096
	// minArgMax is what the kernel allows at least (ARG_MAX), and
	// maxArgMax is its cap of 3/4 of _STK_LIM.
	minArgMax = 32 * 4096
	maxArgMax = 6 << 20
	// argSlack is room left for the variables the sandbox adds and
	// for the auxiliary vector.
	argSlack = 4096
	// maxQuoted bounds how much of a client's string a message
	// repeats.
	maxQuoted = 64
)

// argMax is the room execve(2) gives argv and envp together: a quarter
// of the stack limit, which actions inherit from the worker.
func argMax() int {
	var rlim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &rlim); err != nil || rlim.Cur == unix.RLIM_INFINITY {
		return maxArgMax
	}
	return min(max(int(rlim.Cur/4), minArgMax), maxArgMax)
}

// validateCommand checks the parts of a Command that go to execve(2)
// and to the file system as they are: arguments, environment, working
// directory and output paths. Errors are INVALID_ARGUMENT naming the
// field, with at most a short prefix of the offending value.
func validateCommand(command *remoteexecution.Command) error {
	if len(command.Arguments) == 0 {
		return status.Error(codes.InvalidArgument, "The command has no arguments")
	}
	total := 0
	for i, a := range command.Arguments {
		field := fmt.Sprintf("arguments[%d]", i)
		if err := checkExecString(field, a); err != nil {
			return err
		}
		total += len(a) + 1 + 8
	}
	for i, v := range command.EnvironmentVariables {
		field := fmt.Sprintf("environment_variables[%d]", i)
		switch {
		case v.Name == "":
			return status.Errorf(codes.InvalidArgument, "Command.%s has an empty name", field)
		case strings.ContainsAny(v.Name, "=\x00"):
			return status.Errorf(codes.InvalidArgument, "Command.%s: name %s contains \"=\" or NUL", field, quoteShort(v.Name))
		}
		if err := checkExecString(field+" ("+quoteShort(v.Name)+")", v.Name+"="+v.Value); err != nil {
			return err
		}
		total += len(v.Name) + len(v.Value) + 2 + 8
	}
	if limit := argMax() - argSlack; total > limit {
		return status.Errorf(codes.InvalidArgument, "Command.arguments and environment_variables take %d bytes, over the kernel's limit of %d for both (ARG_MAX)", total, limit)
	}
	if err := checkPath("working_directory", command.WorkingDirectory); err != nil {
		return err
	}
	for _, paths := range []struct {
		field string
		list  []string
	}{{"output_paths", command.OutputPaths}, {"output_files", command.OutputFiles}, {"output_directories", command.OutputDirectories}} {
		for i, p := range paths.list {
			if err := checkPath(fmt.Sprintf("%s[%d]", paths.field, i), p); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkExecString checks one argv or envp string.
func checkExecString(field, s string) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return status.Errorf(codes.InvalidArgument, "Command.%s contains a NUL byte at offset %d", field, i)
	}
	if len(s)+1 > maxArgStrlen {
		return status.Errorf(codes.InvalidArgument, "Command.%s is %d bytes, over the kernel's limit of %d per string (MAX_ARG_STRLEN)", field, len(s), maxArgStrlen-1)
	}
	return nil
}

// checkPath checks a path the worker creates or resolves in the exec
// root: no NUL, no component over NAME_MAX, not over PATH_MAX.
func checkPath(field, p string) error {
	if strings.IndexByte(p, 0) >= 0 {
		return status.Errorf(codes.InvalidArgument, "Command.%s %s contains a NUL byte", field, quoteShort(p))
	}
	if len(p) >= unix.PathMax {
		return status.Errorf(codes.InvalidArgument, "Command.%s is %d bytes, over the kernel's limit of %d (PATH_MAX)", field, len(p), unix.PathMax-1)
	}
	for _, c := range strings.Split(p, "/") {
		if len(c) > unix.NAME_MAX {
			return status.Errorf(codes.InvalidArgument, "Command.%s: component %s is %d bytes, over the kernel's limit of %d (NAME_MAX)", field, quoteShort(c), len(c), unix.NAME_MAX)
		}
	}
	return nil
}

// quoteShort quotes s, or a prefix of it when it is long.
func quoteShort(s string) string {
	if len(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:cut], len(s))
}
