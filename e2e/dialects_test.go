package e2e

import (
	"context"
	"fmt"
	"io"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestPlatformAsClientsSpellIt: serve offers the host in the REAPI
// platform lexicon's spelling and matches its values
// case-insensitively, so that Bazel's usual OSFamily=Linux and
// BuildStream's OSFamily=linux, ISA=x86-64 both run; what it does not
// offer is refused with the flag that would offer it.
func TestPlatformAsClientsSpellIt(t *testing.T) {
	c := startServer(t).client()
	for _, platform := range []map[string]string{
		{"OSFamily": "Linux"},                  // Bazel
		{"OSFamily": "linux", "ISA": "x86-64"}, // BuildStream 2
	} {
		if hostISA() != "x86-64" && platform["ISA"] != "" {
			platform["ISA"] = hostISA()
		}
		result := c.run(action{args: sh("echo ran"), platform: platform})
		if got := string(c.read(result.StdoutDigest)); got != "ran\n" {
			t.Errorf("platform %v: stdout %q", platform, got)
		}
	}
	response, _ := c.execute(c.newAction(action{args: []string{"/bin/true"}, platform: map[string]string{"OSFamily": "windows"}}), false)
	st := status.FromProto(response.Status)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("OSFamily=windows: %v, want FAILED_PRECONDITION", st)
	}
	for _, want := range []string{`OSFamily="windows"`, `OSFamily="linux"`, "--platform OSFamily=windows"} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("refusal %q lacks %q", st.Message(), want)
		}
	}
}

// TestPlatformFlagOffersMore: --platform adds a property and replaces
// the host default of the same name.
func TestPlatformFlagOffersMore(t *testing.T) {
	c := startServer(t, "--platform", "pool=big", "--platform", "OSFamily=Linux").client()
	c.run(action{args: []string{"/bin/true"}, platform: map[string]string{"pool": "big", "OSFamily": "LINUX"}})
	response, _ := c.execute(c.newAction(action{args: []string{"/bin/true"}, platform: map[string]string{"pool": "Big"}}), false)
	if st := status.FromProto(response.Status); st.Code() != codes.FailedPrecondition {
		t.Errorf("pool=Big (not a lexicon property: exact): %v", st)
	}
}

func hostISA() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86-64"
	case "arm64":
		return "arm-a64"
	}
	return runtime.GOARCH
}

// TestGetTreeOverPages: serve implements GetTree (bb-storage's CAS
// server does not) with page tokens a client can follow.
func TestGetTreeOverPages(t *testing.T) {
	c := startServer(t).client()
	files := map[string]entry{}
	for i := 0; i < 9; i++ {
		files[fmt.Sprintf("d%d/sub/file%d", i, i)] = entry{content: fmt.Sprint(i)}
	}
	root := c.tree(files)
	var directories int
	token, pages := "", 0
	for {
		stream, err := c.cas.GetTree(context.Background(), &remoteexecution.GetTreeRequest{InstanceName: c.instance, RootDigest: root, PageSize: 4, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		token = ""
		for {
			response, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("page %d: %v", pages, err)
			}
			directories += len(response.Directories)
			token = response.NextPageToken
		}
		pages++
		if token == "" {
			break
		}
	}
	// The root, d0..d8 and their nine sub directories.
	if directories != 19 || pages != 5 {
		t.Errorf("%d directories in %d pages, want 19 in 5", directories, pages)
	}
	stream, err := c.cas.GetTree(context.Background(), &remoteexecution.GetTreeRequest{InstanceName: c.instance, RootDigest: root, PageToken: "bogus"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad page token: %v, want INVALID_ARGUMENT", err)
	}
}
