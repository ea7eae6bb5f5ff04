package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestCapabilities(t *testing.T) {
	c := startServer(t).client()
	caps, err := c.caps.GetCapabilities(context.Background(), &remoteexecution.GetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if caps.LowApiVersion.GetMajor() != 2 || caps.LowApiVersion.GetMinor() != 0 {
		t.Errorf("low API version %v, want 2.0 (Bazel 4)", caps.LowApiVersion)
	}
	if !caps.ExecutionCapabilities.GetExecEnabled() || !caps.CacheCapabilities.GetActionCacheUpdateCapabilities().GetUpdateEnabled() {
		t.Errorf("capabilities %v", caps)
	}
	found := false
	for _, p := range caps.ExecutionCapabilities.GetSupportedNodeProperties() {
		found = found || p == "bitzel.layers"
	}
	if !found {
		t.Errorf("bitzel.layers not advertised: %v", caps.ExecutionCapabilities.GetSupportedNodeProperties())
	}
}

func TestOutputFilesInNestedDirectoriesLegacyFields(t *testing.T) {
	c := startServer(t).client()
	// REAPI 2.0: output_files only, parents created by the worker.
	result := c.run(action{
		args:        sh(`echo a > out/deep/er/a.txt && printf b > out/b.bin && cp in/x.txt out/deep/copy.txt`),
		outputFiles: []string{"out/deep/er/a.txt", "out/b.bin", "out/deep/copy.txt", "out/never-written"},
		input:       c.tree(map[string]entry{"in/x.txt": {content: "input x\n"}}),
	})
	got := map[string]string{}
	for _, f := range result.OutputFiles {
		got[f.Path] = string(c.read(f.Digest))
	}
	want := map[string]string{"out/deep/er/a.txt": "a\n", "out/b.bin": "b", "out/deep/copy.txt": "input x\n"}
	if len(got) != len(want) {
		t.Errorf("outputs %v, want %v", got, want)
	}
	for p, content := range want {
		if got[p] != content {
			t.Errorf("%s = %q, want %q", p, got[p], content)
		}
	}
}

func TestOutputPathsDirectoriesSymlinksAndExecutables(t *testing.T) {
	c := startServer(t).client()
	result := c.run(action{
		args: sh(`mkdir -p d/sub d/empty && echo 1 > d/one && echo 2 > d/sub/two && printf '#!/bin/sh\n' > d/tool && chmod 755 d/tool &&
			ln -s one d/link && ln -s ../d/one top-link && echo f > file`),
		outputPaths: []string{"d", "top-link", "file"},
	})
	if len(result.OutputFiles) != 1 || result.OutputFiles[0].Path != "file" {
		t.Errorf("output files %v", result.OutputFiles)
	}
	if len(result.OutputSymlinks) != 1 || result.OutputSymlinks[0].Path != "top-link" || result.OutputSymlinks[0].Target != "../d/one" {
		t.Errorf("output symlinks %v", result.OutputSymlinks)
	}
	if len(result.OutputDirectories) != 1 {
		t.Fatalf("output directories %v", result.OutputDirectories)
	}
	tree := &remoteexecution.Tree{}
	if err := proto.Unmarshal(c.read(result.OutputDirectories[0].TreeDigest), tree); err != nil {
		t.Fatal(err)
	}
	root := tree.Root
	names := map[string]bool{}
	for _, f := range root.Files {
		names[f.Name] = f.IsExecutable
	}
	if exe, ok := names["tool"]; !ok || !exe {
		t.Errorf("d/tool missing or not executable: %v", root.Files)
	}
	if exe, ok := names["one"]; !ok || exe {
		t.Errorf("d/one missing or executable: %v", root.Files)
	}
	if len(root.Symlinks) != 1 || root.Symlinks[0].Target != "one" {
		t.Errorf("d's symlinks %v", root.Symlinks)
	}
	var dirs []string
	for _, d := range root.Directories {
		dirs = append(dirs, d.Name)
	}
	if strings.Join(dirs, ",") != "empty,sub" || len(tree.Children) != 2 {
		t.Errorf("d's directories %v, %d children", dirs, len(tree.Children))
	}
}

func TestExitCodeStdoutStderrEnvAndWorkingDirectory(t *testing.T) {
	c := startServer(t).client()
	result := c.run(action{
		args:       sh(`echo "$GREETING from $(pwd | sed 's|.*/||')"; echo oops >&2; exit 3`),
		env:        map[string]string{"GREETING": "hello", "PATH": "/usr/bin:/bin"},
		workingDir: "pkg/sub",
		input:      c.tree(map[string]entry{"pkg/sub/": {}}),
	})
	if result.ExitCode != 3 {
		t.Errorf("exit code %d", result.ExitCode)
	}
	if got := string(c.read(result.StdoutDigest)); got != "hello from sub\n" {
		t.Errorf("stdout %q", got)
	}
	if got := string(c.read(result.StderrDigest)); got != "oops\n" {
		t.Errorf("stderr %q", got)
	}
	m := result.ExecutionMetadata
	if m.GetWorker() == "" || !m.GetExecutionStartTimestamp().IsValid() || !m.GetOutputUploadCompletedTimestamp().IsValid() ||
		m.ExecutionCompletedTimestamp.AsTime().Before(m.ExecutionStartTimestamp.AsTime()) || len(m.AuxiliaryMetadata) == 0 {
		t.Errorf("execution metadata %v", m)
	}
}

func TestTimeoutKillsGrandchildrenAndKeepsPartialLogs(t *testing.T) {
	c := startServer(t).client()
	start := time.Now()
	response, _ := c.execute(c.newAction(action{
		args:    sh(`echo before; (setsid sleep 600 &); sleep 600`),
		timeout: time.Second,
	}), false)
	if st := status.FromProto(response.Status); st.Code() != codes.DeadlineExceeded {
		t.Fatalf("status %v, want DEADLINE_EXCEEDED", st)
	}
	if elapsed := time.Since(start); elapsed > 60*time.Second {
		t.Errorf("took %v", elapsed)
	}
	if got := string(c.read(response.Result.GetStdoutDigest())); got != "before\n" {
		t.Errorf("partial stdout %q", got)
	}
}

func preconditionSubjects(t *testing.T, st *status.Status) []string {
	t.Helper()
	var subjects []string
	for _, detail := range st.Details() {
		if failure, ok := detail.(*errdetails.PreconditionFailure); ok {
			for _, v := range failure.Violations {
				if v.Type != "MISSING" {
					t.Errorf("violation type %q", v.Type)
				}
				subjects = append(subjects, v.Subject)
			}
		}
	}
	return subjects
}

func TestMissingInputsAreAllListed(t *testing.T) {
	c := startServer(t).client()
	missing1, missing2 := digestOf([]byte("never uploaded 1")), digestOf([]byte("never uploaded 2"))
	sub := c.uploadProto(&remoteexecution.Directory{Files: []*remoteexecution.FileNode{{Name: "m2", Digest: missing2}}})
	root := c.uploadProto(&remoteexecution.Directory{
		Files:       []*remoteexecution.FileNode{{Name: "m1", Digest: missing1}},
		Directories: []*remoteexecution.DirectoryNode{{Name: "sub", Digest: sub}},
	})
	response, _ := c.execute(c.newAction(action{args: []string{"/bin/true"}, input: root}), false)
	st := status.FromProto(response.Status)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("status %v", st)
	}
	subjects := preconditionSubjects(t, st)
	want := []string{"blobs/" + key(missing1), "blobs/" + key(missing2)}
	if strings.Join(sortedKeys(setOf(subjects)), " ") != strings.Join(sortedKeys(setOf(want)), " ") {
		t.Errorf("missing subjects %v, want %v", subjects, want)
	}

	// A missing Action is reported the same way.
	ghost := digestOf([]byte("no such action"))
	response, _ = c.execute(ghost, false)
	if subjects := preconditionSubjects(t, status.FromProto(response.Status)); len(subjects) != 1 || subjects[0] != "blobs/"+key(ghost) {
		t.Errorf("missing action: %v", response.Status)
	}
}

func setOf(values []string) map[string]bool {
	m := map[string]bool{}
	for _, v := range values {
		m[v] = true
	}
	return m
}

func TestBadTreesAreInvalidArgumentNamingThePath(t *testing.T) {
	c := startServer(t).client()
	file := c.upload([]byte("x"))[0]
	cases := map[string]struct {
		dir  *remoteexecution.Directory
		want string
	}{
		"unsorted":         {&remoteexecution.Directory{Files: []*remoteexecution.FileNode{{Name: "b", Digest: file}, {Name: "a", Digest: file}}}, `"a"`},
		"dotdot":           {&remoteexecution.Directory{Files: []*remoteexecution.FileNode{{Name: "..", Digest: file}}}, `".."`},
		"slash":            {&remoteexecution.Directory{Files: []*remoteexecution.FileNode{{Name: "a/b", Digest: file}}}, `"a/b"`},
		"escaping symlink": {&remoteexecution.Directory{Symlinks: []*remoteexecution.SymlinkNode{{Name: "up", Target: "../../etc/passwd"}}}, `"up"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			response, _ := c.execute(c.newAction(action{args: []string{"/bin/true"}, input: c.uploadProto(tc.dir)}), false)
			st := status.FromProto(response.Status)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.want) {
				t.Errorf("status %v, want INVALID_ARGUMENT naming %s", st, tc.want)
			}
		})
	}
}

func TestSecondRunIsAnActionCacheHit(t *testing.T) {
	c := startServer(t).client()
	a := c.newAction(action{args: sh(`date +%s%N > out`), outputFiles: []string{"out"}})
	first, _ := c.execute(a, false)
	if first.CachedResult || first.Result.ExitCode != 0 {
		t.Fatalf("first run: %v", first)
	}
	second, _ := c.execute(a, false)
	if !second.CachedResult || !proto.Equal(first.Result.OutputFiles[0], second.Result.OutputFiles[0]) {
		t.Errorf("second run not served from the AC: cached %v", second.CachedResult)
	}
	// GetActionResult sees it too (what Bazel asks first).
	if _, err := c.ac.GetActionResult(context.Background(), &remoteexecution.GetActionResultRequest{ActionDigest: a}); err != nil {
		t.Errorf("GetActionResult: %v", err)
	}
	third, _ := c.execute(a, true)
	if len(third.Result.GetOutputFiles()) != 1 {
		t.Fatalf("skip_cache_lookup run: %v", third)
	}
	if third.CachedResult || proto.Equal(first.Result.OutputFiles[0], third.Result.OutputFiles[0]) {
		t.Error("skip_cache_lookup was served from the cache")
	}
	// Failures and do_not_cache are not cached.
	failing := c.newAction(action{args: sh(`exit 1`)})
	c.execute(failing, false)
	if again, _ := c.execute(failing, false); again.CachedResult {
		t.Error("a failed action was cached")
	}
	uncached := c.newAction(action{args: []string{"/bin/true"}, doNotCache: true})
	c.execute(uncached, false)
	if again, _ := c.execute(uncached, false); again.CachedResult {
		t.Error("a do_not_cache action was cached")
	}
}

func TestPlatformMismatchIsRefused(t *testing.T) {
	c := startServer(t).client()
	response, _ := c.execute(c.newAction(action{args: []string{"/bin/true"}, platform: map[string]string{"gpu": "a100"}}), false)
	st := status.FromProto(response.Status)
	if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), `gpu="a100"`) {
		t.Errorf("status %v", st)
	}
}

func TestEmptyOutputsStillGiveActionCacheHits(t *testing.T) {
	c := startServer(t).client()
	// Empty stdout, stderr and output file: all the empty blob, which
	// must count as present or the completeness check drops the entry.
	a := c.newAction(action{args: sh(`: > empty`), outputFiles: []string{"empty"}})
	first, _ := c.execute(a, false)
	if first.Result.GetExitCode() != 0 || first.Status.GetCode() != 0 {
		t.Fatalf("first run: %v", first)
	}
	if _, err := c.ac.GetActionResult(context.Background(), &remoteexecution.GetActionResultRequest{ActionDigest: a}); err != nil {
		t.Errorf("GetActionResult of a result with empty logs: %v", err)
	}
	if second, _ := c.execute(a, false); !second.CachedResult {
		t.Error("second run was not an Action Cache hit")
	}
}

func TestActionsCanModifyTheirInputsWithoutTouchingTheCache(t *testing.T) {
	s := startServer(t)
	c := s.client()
	input := c.tree(map[string]entry{"src/a.txt": {content: "original\n"}, "src/tool": {content: "#!/bin/sh\n", executable: true}})
	// What Bazel's cc link does (new files next to inputs) and what a
	// BitBake task does (edit an input in place, chmod it).
	script := `echo new > src/new.txt && echo appended >> src/a.txt && chmod 600 src/a.txt && rm src/tool && cat src/a.txt`
	for i := 0; i < 2; i++ {
		result := c.run(action{args: sh(script + fmt.Sprintf("; echo run %d >/dev/null", i)), input: input, outputFiles: []string{"src/new.txt"}})
		if result.ExitCode != 0 {
			t.Fatalf("run %d: exit %d: %s", i, result.ExitCode, c.read(result.StderrDigest))
		}
		// The second run sees the original input again: the first
		// one's edits never reached the cached layer.
		if got := string(c.read(result.StdoutDigest)); got != "original\nappended\n" {
			t.Errorf("run %d: a.txt = %q", i, got)
		}
	}
	// Inputs carry the fixed timestamp, whichever run cached them.
	result := c.run(action{args: sh(`stat -c %Y src/a.txt`), input: input})
	if got := strings.TrimSpace(string(c.read(result.StdoutDigest))); got != "946684800" {
		t.Errorf("input mtime %s, want 946684800 (2000-01-01)", got)
	}
}

func TestAbsoluteSymlinksAreAllowedInInputsAndOutputs(t *testing.T) {
	c := startServer(t).client()
	input := c.uploadProto(&remoteexecution.Directory{Symlinks: []*remoteexecution.SymlinkNode{{Name: "shell", Target: "/bin/sh"}}})
	result := c.run(action{
		args:        []string{"./shell", "-c", `readlink shell; mkdir -p out; ln -s /usr/include out/inc`},
		input:       input,
		outputPaths: []string{"out"},
	})
	if got := string(c.read(result.StdoutDigest)); got != "/bin/sh\n" {
		t.Errorf("input symlink read as %q", got)
	}
	tree := &remoteexecution.Tree{}
	if err := proto.Unmarshal(c.read(result.OutputDirectories[0].TreeDigest), tree); err != nil {
		t.Fatal(err)
	}
	if len(tree.Root.Symlinks) != 1 || tree.Root.Symlinks[0].Target != "/usr/include" {
		t.Errorf("output symlinks %v", tree.Root.Symlinks)
	}
}

func TestOutputDirectoryAsRootDirectoryDigest(t *testing.T) {
	c := startServer(t).client()
	result := c.run(action{
		args:        sh(`mkdir -p d/sub && echo x > d/sub/f && echo y > d/g`),
		outputPaths: []string{"d"},
		dirFormat:   remoteexecution.Command_TREE_AND_DIRECTORY,
	})
	out := result.OutputDirectories[0]
	if out.TreeDigest == nil || out.RootDirectoryDigest == nil {
		t.Fatalf("output directory %v", out)
	}
	// The root Directory and the one below it are stored on their own.
	root := &remoteexecution.Directory{}
	if err := proto.Unmarshal(c.read(out.RootDirectoryDigest), root); err != nil {
		t.Fatal(err)
	}
	if len(root.Files) != 1 || root.Files[0].Name != "g" || len(root.Directories) != 1 {
		t.Fatalf("root directory %v", root)
	}
	sub := &remoteexecution.Directory{}
	if err := proto.Unmarshal(c.read(root.Directories[0].Digest), sub); err != nil || len(sub.Files) != 1 || sub.Files[0].Name != "f" {
		t.Fatalf("sub directory %v, %v", sub, err)
	}
}

// The worker reuses action directories (upper, work, spilled logs)
// instead of creating and removing them for every action. An action
// that leaves its exec root changed (mode, files, an unreadable
// directory, a spilled log) must not be seen by the next one.
func TestNextActionSeesAFreshExecRoot(t *testing.T) {
	s := startServer(t, "--concurrency", "1")
	c := s.client()
	input := c.tree(map[string]entry{"in/a.txt": {content: "a"}})
	inspect := func(run string) string {
		check := c.run(action{input: input, env: map[string]string{"RUN": run}, args: sh(`stat -c %a . in; ls -A; cat in/a.txt`)})
		return string(c.read(check.StdoutDigest))
	}
	// The server's first action gets a directory never used before.
	fresh := inspect("first")
	if !strings.HasSuffix(fresh, "in\na") {
		t.Fatalf("first action saw %q", fresh)
	}
	for i := 0; i < 4; i++ {
		dirty := c.run(action{input: input, env: map[string]string{"RUN": fmt.Sprint("dirty", i)}, args: sh(`
			chmod 700 . && mkdir -p junk/locked && echo x > junk/locked/f && chmod 000 junk/locked
			echo left > leftover && chmod 000 in
			head -c 1500000 /dev/zero`)})
		if dirty.ExitCode != 0 {
			t.Fatalf("dirty action: exit %d, stderr %q", dirty.ExitCode, c.read(dirty.StderrDigest))
		}
		if got := inspect(fmt.Sprint("check", i)); got != fresh {
			t.Fatalf("round %d: the next action saw %q, want %q as in a fresh exec root", i, got, fresh)
		}
	}
	// Reused, not created and removed each time: the spare
	// directories stay on disk.
	entries, err := os.ReadDir(filepath.Join(s.dataDir, "build"))
	if err != nil || len(entries) == 0 || len(entries) > 16 {
		t.Errorf("build directory holds %d action directories (%v); want 1 to 16 kept for reuse", len(entries), err)
	}
}
