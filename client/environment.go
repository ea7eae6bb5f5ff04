package client

import (
	"sort"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
)

// DefaultPATH is the PATH sent for a command that sets none: Debian's
// for root. A worker rightly invents no environment (the REAPI makes
// the Command's variables the whole of it), and a command without PATH
// fails far from the cause (gcc: "cannot execute 'cc1'").
const DefaultPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Environment returns a Command's environment variables, sorted by
// name as the REAPI requires, from NAME, VALUE pairs; PATH=defaultPATH
// is added when no pair sets PATH and defaultPATH is not empty.
func Environment(variables [][2]string, defaultPATH string) []*remoteexecution.Command_EnvironmentVariable {
	var result []*remoteexecution.Command_EnvironmentVariable
	hasPATH := false
	for _, kv := range variables {
		hasPATH = hasPATH || kv[0] == "PATH"
		result = append(result, &remoteexecution.Command_EnvironmentVariable{Name: kv[0], Value: kv[1]})
	}
	if !hasPATH && defaultPATH != "" {
		result = append(result, &remoteexecution.Command_EnvironmentVariable{Name: "PATH", Value: defaultPATH})
	}
	sort.SliceStable(result, func(i, j int) bool { return result[i].Name < result[j].Name })
	return result
}
