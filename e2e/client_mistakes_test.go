package e2e

import (
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// What execve(2) or the file system would refuse is the client's
// mistake: INVALID_ARGUMENT with a short message naming the field or
// path, not INTERNAL.
func TestClientMistakesAreInvalidArgumentNamingTheField(t *testing.T) {
	c := startServer(t).client()
	file := c.upload([]byte("x"))[0]
	long := strings.Repeat("n", 256)
	huge := strings.Repeat("a", 200<<10)
	many := make([]string, 0, 40)
	for range 40 {
		many = append(many, strings.Repeat("b", 100<<10))
	}
	cases := map[string]struct {
		a    action
		want string
	}{
		"input name over NAME_MAX": {action{args: []string{"/bin/true"}, input: c.uploadProto(&remoteexecution.Directory{
			Files: []*remoteexecution.FileNode{{Name: long, Digest: file}}})}, "NAME_MAX"},
		"symlink target over PATH_MAX": {action{args: []string{"/bin/true"}, input: c.uploadProto(&remoteexecution.Directory{
			Symlinks: []*remoteexecution.SymlinkNode{{Name: "l", Target: strings.Repeat("d/", 2100)}}})}, `"l"`},
		"NUL in an argument":                  {action{args: []string{"/bin/echo", "a\x00b"}}, "arguments[1]"},
		"NUL in a variable":                   {action{args: []string{"/bin/true"}, env: map[string]string{"V": "a\x00b"}}, "environment_variables[0]"},
		"argument over MAX_ARG_STRLEN":        {action{args: []string{"/bin/echo", huge}}, "arguments[1]"},
		"variable over MAX_ARG_STRLEN":        {action{args: []string{"/bin/true"}, env: map[string]string{"HUGE": huge}}, "environment_variables[0]"},
		"arguments over ARG_MAX":              {action{args: append([]string{"/bin/echo"}, many...)}, "ARG_MAX"},
		"output path component over NAME_MAX": {action{args: []string{"/bin/true"}, outputFiles: []string{long}}, "output_files[0]"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			response, _ := c.execute(c.newAction(tc.a), false)
			st := status.FromProto(response.Status)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.want) {
				t.Errorf("status %v %.300q, want INVALID_ARGUMENT naming %s", st.Code(), st.Message(), tc.want)
			}
			if len(st.Message()) > 1024 {
				t.Errorf("message of %d bytes", len(st.Message()))
			}
		})
	}
}
