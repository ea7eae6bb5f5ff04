package worker

import (
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestWholeRootInstanceNames(t *testing.T) {
	for name, want := range map[string]bool{
		"":                false,
		"whole-root":      true,
		"main/whole-root": true,
		"whole-root/main": false,
		"whole-rooted":    false,
	} {
		instanceName, err := digest.NewInstanceName(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := IsWholeRootInstanceName(instanceName); got != want {
			t.Errorf("%q: %v, want %v", name, got, want)
		}
	}
}

func TestOutputPathsTheInputRootItself(t *testing.T) {
	for _, c := range []struct {
		workingDirectory string
		output           string
	}{
		{"", "."},
		{"", "a/.."},
		{"buildstream/elem", "../.."},
		{"sub", ".."},
	} {
		command := &remoteexecution.Command{WorkingDirectory: c.workingDirectory, OutputPaths: []string{c.output}}
		wd, err := cleanRelativePath(c.workingDirectory, "working directory")
		if err != nil {
			t.Fatal(err)
		}
		_, err = outputPaths(command, wd, false)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"whole-root"`) {
			t.Errorf("%q in %q, ordinary instance: %v, want INVALID_ARGUMENT naming the whole-root instance name", c.output, c.workingDirectory, err)
		}
		paths, err := outputPaths(command, wd, true)
		if err != nil {
			t.Errorf("%q in %q, whole root: %v", c.output, c.workingDirectory, err)
		} else if len(paths) != 1 || paths[0] != "" {
			t.Errorf("%q in %q, whole root: %q, want the exec root", c.output, c.workingDirectory, paths)
		}
	}
	// Escapes stay refused in every mode.
	for _, output := range []string{"..", "../x", "a/../../b", "/etc"} {
		_, err := outputPaths(&remoteexecution.Command{OutputPaths: []string{output}}, "", true)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%q, whole root: %v, want INVALID_ARGUMENT", output, err)
		}
	}
}
