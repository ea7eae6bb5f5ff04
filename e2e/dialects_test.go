package e2e

import (
	"context"
	"fmt"
	"io"
	"sort"

	"runtime"
	"strings"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/internal/testsupport"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
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

// buildStreamClient builds actions the way BuildStream 2 does: the
// platform (OSFamily, ISA) sorted in both Action and Command, output
// paths relative to the working directory (the legacy
// output_directories repeating them), DIRECTORY_ONLY, and
// GetActionResult before Execute.
type buildStreamClient struct {
	*client
	t *testing.T
}

func (b *buildStreamClient) action(input *remoteexecution.Digest, workingDirectory, script, output string) *remoteexecution.Digest {
	platform := &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{
		{Name: "ISA", Value: hostISA()},
		{Name: "OSFamily", Value: "linux"},
	}}
	command := &remoteexecution.Command{
		Arguments:             []string{"sh", "-e", "-c", script},
		EnvironmentVariables:  []*remoteexecution.Command_EnvironmentVariable{{Name: "HOME", Value: "/tmp"}, {Name: "PATH", Value: "/usr/bin:/bin"}},
		OutputDirectories:     []string{output},
		OutputPaths:           []string{output},
		WorkingDirectory:      workingDirectory,
		Platform:              platform,
		OutputDirectoryFormat: remoteexecution.Command_DIRECTORY_ONLY,
	}
	return b.uploadProto(&remoteexecution.Action{CommandDigest: b.uploadProto(command), InputRootDigest: input, Platform: platform})
}

// build runs an element's action as BuildStream does and returns the
// root Directory of its one output directory and whether it came from
// the Action Cache.
func (b *buildStreamClient) build(actionDigest *remoteexecution.Digest) (*remoteexecution.Digest, bool) {
	b.t.Helper()
	result, err := b.ac.GetActionResult(context.Background(), &remoteexecution.GetActionResultRequest{InstanceName: b.instance, ActionDigest: actionDigest})
	cached := err == nil
	if !cached {
		if status.Code(err) != codes.NotFound {
			b.t.Fatalf("GetActionResult: %v", err)
		}
		response, _ := b.execute(actionDigest, false)
		if st := status.FromProto(response.Status); st.Code() != codes.OK {
			b.t.Fatalf("execute: %v", st.Err())
		}
		result = response.Result
		if result.ExitCode != 0 {
			b.t.Fatalf("exit %d, stderr %s", result.ExitCode, b.read(result.StderrDigest))
		}
	}
	if len(result.OutputDirectories) != 1 {
		b.t.Fatalf("%d output directories, want 1: %v", len(result.OutputDirectories), result)
	}
	output := result.OutputDirectories[0]
	if output.RootDirectoryDigest == nil || output.TreeDigest == nil {
		b.t.Fatalf("output directory %v: want root_directory_digest (DIRECTORY_ONLY) and the Tree", output)
	}
	// The Tree of the input root, as REAPI returns every output
	// directory.
	tree := &remoteexecution.Tree{}
	if err := proto.Unmarshal(b.read(output.TreeDigest), tree); err != nil {
		b.t.Fatal(err)
	}
	return output.RootDirectoryDigest, cached
}

func (b *buildStreamClient) directory(d *remoteexecution.Digest) *remoteexecution.Directory {
	b.t.Helper()
	directory := &remoteexecution.Directory{}
	if err := proto.Unmarshal(b.read(d), directory); err != nil {
		b.t.Fatal(err)
	}
	return directory
}

// union merges two trees as BuildStream stages two artifacts into one
// sandbox: b's entries over a's, directories merged.
func (b *buildStreamClient) union(x, y *remoteexecution.Digest) *remoteexecution.Digest {
	b.t.Helper()
	dx, dy := b.directory(x), b.directory(y)
	merged := &remoteexecution.Directory{}
	names := map[string]bool{}
	children := map[string][]*remoteexecution.Digest{}
	for _, d := range []*remoteexecution.Directory{dx, dy} {
		for _, n := range d.Directories {
			children[n.Name] = append(children[n.Name], n.Digest)
		}
	}
	for _, d := range []*remoteexecution.Directory{dy, dx} {
		for _, f := range d.Files {
			if !names[f.Name] && children[f.Name] == nil {
				names[f.Name] = true
				merged.Files = append(merged.Files, f)
			}
		}
		for _, s := range d.Symlinks {
			if !names[s.Name] && children[s.Name] == nil {
				names[s.Name] = true
				merged.Symlinks = append(merged.Symlinks, s)
			}
		}
	}
	for _, name := range sortedKeys(children) {
		digest := children[name][0]
		if len(children[name]) == 2 {
			digest = b.union(children[name][0], children[name][1])
		}
		merged.Directories = append(merged.Directories, &remoteexecution.DirectoryNode{Name: name, Digest: digest})
	}
	sort.Slice(merged.Files, func(i, j int) bool { return merged.Files[i].Name < merged.Files[j].Name })
	sort.Slice(merged.Symlinks, func(i, j int) bool { return merged.Symlinks[i].Name < merged.Symlinks[j].Name })
	return b.uploadProto(merged)
}

// file reads a regular file at a path of a tree.
func (b *buildStreamClient) file(root *remoteexecution.Digest, p string) (string, bool) {
	b.t.Helper()
	parts := strings.Split(p, "/")
	d := b.directory(root)
	for _, part := range parts[:len(parts)-1] {
		var next *remoteexecution.Digest
		for _, n := range d.Directories {
			if n.Name == part {
				next = n.Digest
			}
		}
		if next == nil {
			return "", false
		}
		d = b.directory(next)
	}
	for _, f := range d.Files {
		if f.Name == parts[len(parts)-1] {
			return string(b.read(f.Digest)), true
		}
	}
	return "", false
}

// busyboxUserland is an input tree holding a static busybox as /bin's
// shell and tools, the userland of a BuildStream base element.
func busyboxUserland(t *testing.T, c *client) *remoteexecution.Digest {
	t.Helper()
	data := testsupport.StaticBusyboxData(t)
	files := map[string]entry{"bin/busybox": {content: string(data), executable: true}, "etc/": {}}
	for _, applet := range []string{"sh", "cat", "mkdir", "echo", "ls", "test"} {
		files["bin/"+applet] = entry{symlink: "busybox"}
	}
	return c.tree(files)
}

// TestBuildStreamStyleWholeRootClient plays BuildStream 2 against
// serve under the whole-root instance name: an element built over a
// busybox userland with output ".", a second element over the union of
// the first one's artifact and a source tree, whose working directory
// is below the root and whose output climbs back to it, and a rerun
// answered by GetActionResult. An ordinary instance name refuses ".".
func TestBuildStreamStyleWholeRootClient(t *testing.T) {
	s := startServer(t)
	c := s.client()
	c.instance = "whole-root"
	b := &buildStreamClient{client: c, t: t}
	userland := busyboxUserland(t, c)

	first := b.action(userland, "", `mkdir -p /usr/share/hello; echo hello > /usr/share/hello/greeting; echo built-in-root > /marker`, ".")
	artifact, cached := b.build(first)
	if cached {
		t.Fatal("first build was a cache hit")
	}
	for p, want := range map[string]string{"usr/share/hello/greeting": "hello\n", "marker": "built-in-root\n"} {
		if got, ok := b.file(artifact, p); !ok || got != want {
			t.Errorf("artifact %s: %q (present %v), want %q", p, got, ok, want)
		}
	}
	if _, ok := b.file(artifact, "bin/busybox"); !ok {
		t.Error("artifact lacks the input root's bin/busybox")
	}
	for _, n := range b.directory(artifact).Directories {
		if n.Name == "proc" || n.Name == "dev" || n.Name == "tmp" {
			t.Errorf("artifact holds the sandbox's mount point %s", n.Name)
		}
	}

	sources := c.tree(map[string]entry{"src/data.txt": {content: "from sources\n"}, "buildstream/second/": {}})
	second := b.action(b.union(artifact, sources), "buildstream/second",
		`cat /usr/share/hello/greeting /src/data.txt > /combined; test "$(pwd)" = /buildstream/second`, "../..")
	combined, _ := b.build(second)
	if got, _ := b.file(combined, "combined"); got != "hello\nfrom sources\n" {
		t.Errorf("second element's combined: %q", got)
	}

	// A rerun: BuildStream's GetActionResult finds both.
	for _, a := range []*remoteexecution.Digest{first, second} {
		if again, cached := b.build(a); !cached || !proto.Equal(again, map[bool]*remoteexecution.Digest{true: artifact, false: combined}[a == first]) {
			t.Errorf("rerun: cached %v, root %v", cached, again)
		}
	}

	// The same action under an ordinary instance name: "." is refused,
	// naming the instance name that allows it.
	plain := s.client()
	plainAction := (&buildStreamClient{client: plain, t: t}).action(busyboxUserland(t, plain), "", "true", ".")
	response, _ := plain.execute(plainAction, false)
	st := status.FromProto(response.Status)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), `"whole-root"`) {
		t.Errorf("output \".\" on an ordinary instance: %v, want INVALID_ARGUMENT naming whole-root", st)
	}
}
