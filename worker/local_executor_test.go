package worker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/outputs"
	"github.com/bitzel/bitzel-worker/sandbox"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var trueCommand = &remoteexecution.Command{
	Arguments:            []string{"/bin/true"},
	EnvironmentVariables: []*remoteexecution.Command_EnvironmentVariable{{Name: "PATH", Value: "/bin"}},
}

func TestNewLocalExecutorWipesItsBuildDirectory(t *testing.T) {
	f := newExecutorFixture(t)
	if err := os.MkdirAll(filepath.Join(f.buildDir, "7", "upper0"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.executor()
	info, err := os.Stat(f.buildDir)
	if err != nil {
		t.Fatal(err)
	}
	if got := entries(t, f.buildDir); len(got) != 0 {
		t.Errorf("build directory holds %v after start-up, want nothing", got)
	}
	if info.Mode().Perm() != 0o711 {
		t.Errorf("build directory mode %v, want 0711", info.Mode().Perm())
	}
	// A build directory that cannot be created is an error, not a
	// panic later.
	f.options.BuildDirectory = filepath.Join(f.buildDir, "file", "build")
	if err := os.WriteFile(filepath.Join(f.buildDir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewLocalExecutor(f.options); err == nil {
		t.Error("NewLocalExecutor under a regular file succeeded")
	}
}

// Long on purpose: one scenario whose steps build on each other (each
// needs the state the previous left), read top to bottom.
func TestLocalExecutorRunsAnActionAndUploadsItsLogsAndOutputs(t *testing.T) {
	f := newExecutorFixture(t)
	f.runner.run = writeLogs("hello\n", "warning\n", sandbox.Result{ExitCode: 3, WallTime: 2 * time.Second, Signal: 0})
	f.outputs.captureResult = &remoteexecution.ActionResult{
		OutputFiles:       []*remoteexecution.OutputFile{{Path: "out.txt", Digest: digestOfBytes([]byte("x")).GetProto()}},
		OutputDirectories: []*remoteexecution.OutputDirectory{{Path: "dir"}},
		OutputSymlinks:    []*remoteexecution.OutputSymlink{{Path: "link", Target: "out.txt"}},
	}
	command := &remoteexecution.Command{
		Arguments: []string{"/bin/sh", "-c", "echo hello"},
		EnvironmentVariables: []*remoteexecution.Command_EnvironmentVariable{
			{Name: "PATH", Value: "/bin"}, {Name: "LANG", Value: "C"}, {Name: "EMPTY", Value: ""},
		},
		OutputPaths: []string{"out.txt", "dir", "link"},
	}
	request := f.request(&remoteexecution.Action{Timeout: durationpb.New(90 * time.Second)}, command)
	queued := timestamppb.New(time.Now().Add(-time.Second))
	request.QueuedTimestamp = queued
	forwarded, _ := structpb.NewStruct(map[string]any{"from": "scheduler"})
	forwardedAny, err := anypb.New(forwarded)
	if err != nil {
		t.Fatal(err)
	}
	request.AuxiliaryMetadata = []*anypb.Any{forwardedAny}

	stages := &stageRecorder{}
	before := time.Now()
	response := f.executor().Execute(context.Background(), request, stages.observe)
	after := time.Now()

	if response.Status.GetCode() != int32(codes.OK) {
		t.Fatalf("status %v, want OK", response.Status)
	}
	if got, want := stages.seen(), []Stage{StageStarted, StageFetchingInputs, StageRunning, StageUploadingOutputs}; !reflect.DeepEqual(got, want) {
		t.Errorf("stages %v, want %v", got, want)
	}
	result := response.Result
	if result.ExitCode != 3 {
		t.Errorf("exit code %d, want 3", result.ExitCode)
	}
	if got := string(readBlob(t, f.storage, result.StdoutDigest)); got != "hello\n" {
		t.Errorf("stdout %q", got)
	}
	if got := string(readBlob(t, f.storage, result.StderrDigest)); got != "warning\n" {
		t.Errorf("stderr %q", got)
	}
	if f.outputs.blobUploads != 2 || len(f.outputs.fileUploads) != 0 {
		t.Errorf("%d blob and %d file uploads, want 2 small logs uploaded from memory", f.outputs.blobUploads, len(f.outputs.fileUploads))
	}
	if len(result.OutputFiles) != 1 || result.OutputFiles[0].Path != "out.txt" || len(result.OutputDirectories) != 1 || len(result.OutputSymlinks) != 1 {
		t.Errorf("outputs not merged into the result: %v", result)
	}

	specs := f.runner.runs()
	if len(specs) != 1 {
		t.Fatalf("%d runs, want 1", len(specs))
	}
	spec := specs[0]
	if !reflect.DeepEqual(spec.Argv, command.Arguments) {
		t.Errorf("argv %q, want %q", spec.Argv, command.Arguments)
	}
	if want := []string{"PATH=/bin", "LANG=C", "EMPTY="}; !reflect.DeepEqual(spec.Env, want) {
		t.Errorf("environment %q, want exactly the Command's %q", spec.Env, want)
	}
	if spec.Timeout != 90*time.Second {
		t.Errorf("timeout %v, want the action's 90s", spec.Timeout)
	}
	if len(spec.Mounts) != 1 || spec.Mounts[0].Layers[0] != f.materializer.layer || !strings.HasPrefix(spec.Mounts[0].UpperDir, f.buildDir+"/") || !strings.HasPrefix(spec.Mounts[0].WorkDir, f.buildDir+"/") {
		t.Errorf("mounts %+v, want the input layer with an upper and work directory in the build directory", spec.Mounts)
	}
	if spec.ExecRootIsRoot {
		t.Error("an ordinary instance ran with its input root as /")
	}
	if len(f.outputs.captureUppers) != 1 || !reflect.DeepEqual(f.outputs.captureUppers[0], []string{spec.Mounts[0].UpperDir}) {
		t.Errorf("outputs captured from %v, want the run's upper directory %q", f.outputs.captureUppers, spec.Mounts[0].UpperDir)
	}
	if want := digestOfBytes(nil); len(f.materializer.roots) != 1 || f.materializer.roots[0].GetHashString() != want.GetHashString() {
		t.Errorf("materialised %v, want the action's input root", f.materializer.roots)
	}

	m := result.ExecutionMetadata
	if m.Worker != "test-worker" {
		t.Errorf("worker %q", m.Worker)
	}
	if m.QueuedTimestamp != queued {
		t.Errorf("queued timestamp %v, want the front end's %v", m.QueuedTimestamp, queued)
	}
	ordered := []*timestamppb.Timestamp{
		m.WorkerStartTimestamp, m.InputFetchStartTimestamp, m.InputFetchCompletedTimestamp,
		m.ExecutionStartTimestamp, m.ExecutionCompletedTimestamp,
		m.OutputUploadStartTimestamp, m.OutputUploadCompletedTimestamp, m.WorkerCompletedTimestamp,
	}
	for i, ts := range ordered {
		if ts == nil {
			t.Fatalf("timestamp %d of the metadata not set: %v", i, m)
		}
		if at := ts.AsTime(); at.Before(before.Add(-time.Millisecond)) || at.After(after.Add(time.Millisecond)) {
			t.Errorf("timestamp %d is %v, outside the call [%v, %v]", i, at, before, after)
		}
		if i > 0 && ts.AsTime().Before(ordered[i-1].AsTime()) {
			t.Errorf("timestamp %d (%v) before timestamp %d (%v)", i, ts.AsTime(), i-1, ordered[i-1].AsTime())
		}
	}
	// The front end's auxiliary metadata first, then the measured
	// resource usage.
	if len(m.AuxiliaryMetadata) != 2 {
		t.Fatalf("%d auxiliary metadata, want the forwarded one and the resource usage", len(m.AuxiliaryMetadata))
	}
	var usage structpb.Struct
	if err := m.AuxiliaryMetadata[1].UnmarshalTo(&usage); err != nil {
		t.Fatal(err)
	}
	if got := usage.Fields["wall_time_seconds"].GetNumberValue(); got != 2 {
		t.Errorf("wall_time_seconds %v, want 2", got)
	}
	if _, ok := notCachedReason(result); ok {
		t.Error("an ordinary result was marked not to be cached")
	}
	// The request's own metadata list is not appended to in place.
	if len(request.AuxiliaryMetadata) != 1 {
		t.Errorf("the request's auxiliary metadata grew to %d", len(request.AuxiliaryMetadata))
	}
}

func TestLocalExecutorSpillsALargeLogToAFileAndUploadsIt(t *testing.T) {
	f := newExecutorFixture(t)
	large := strings.Repeat("0123456789abcdef", (logMemoryLimit/16)+1)
	f.runner.run = writeLogs(large, "", sandbox.Result{})
	response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{}, trueCommand), NoopObserver)
	if response.Status.GetCode() != int32(codes.OK) {
		t.Fatalf("status %v", response.Status)
	}
	if len(f.outputs.fileUploads) != 1 || f.outputs.blobUploads != 1 {
		t.Errorf("%d file uploads and %d blob uploads, want stdout from its file and stderr from memory", len(f.outputs.fileUploads), f.outputs.blobUploads)
	}
	if got := readBlob(t, f.storage, response.Result.StdoutDigest); !bytes.Equal(got, []byte(large)) {
		t.Errorf("stdout of %d bytes uploaded, want %d", len(got), len(large))
	}
}

// useRealInputsAndOutputs replaces the fakes with the real materializer
// (layers) and output capturer (outputs) over the fixture's storage, for
// the tests that need a planned input root (parents of outputs, a
// merged view to capture from).
func (f *executorFixture) useRealInputsAndOutputs() {
	f.t.Helper()
	dir := f.t.TempDir()
	// Layers are read-only, which t.TempDir's own cleanup cannot
	// remove without root; this runs first (cleanups are LIFO) and
	// after the caches are closed.
	f.t.Cleanup(func() {
		if err := fsutil.RemoveAll(dir); err != nil {
			f.t.Error(err)
		}
	})
	files, err := layers.NewFileCache(filepath.Join(dir, "files"), 64<<20, 1<<16, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { files.Close() })
	layerCache, err := layers.NewLayerCache(filepath.Join(dir, "layers"), 64<<20, 1<<16)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { layerCache.Close() })
	f.options.Materializer = layers.NewMaterializer(f.storage, files, layerCache, layers.MaterializerOptions{})
	f.options.Outputs = outputs.NewOutputCapturer(f.storage, outputs.OutputCapturerOptions{})
}

// The parents of the outputs and the working directory exist before
// the action runs (REAPI 2.0 clients rely on it), created in the
// action's upper directory; what the action writes there comes back
// as its outputs.
func TestLocalExecutorCreatesTheParentsOfOutputsAndCapturesThem(t *testing.T) {
	f := newExecutorFixture(t)
	f.useRealInputsAndOutputs()
	source := []byte("int main() {}\n")
	sourceDigest := digestOfBytes(source)
	if err := f.storage.ContentAddressableStorage.Put(context.Background(), sourceDigest, buffer.NewValidatedBufferFromByteSlice(source)); err != nil {
		t.Fatal(err)
	}
	srcDigest := putMessage(t, f.storage, &remoteexecution.Directory{
		Files: []*remoteexecution.FileNode{{Name: "main.c", Digest: sourceDigest.GetProto()}},
	})
	rootDigest := putMessage(t, f.storage, &remoteexecution.Directory{
		Directories: []*remoteexecution.DirectoryNode{{Name: "src", Digest: srcDigest.GetProto()}},
	})
	var missing []string
	f.runner.run = func(ctx context.Context, spec *sandbox.Spec) (*sandbox.Result, error) {
		upper := spec.Mounts[0].UpperDir
		for _, p := range []string{"work", "work/obj/x86", "work/gen"} {
			if info, err := os.Stat(filepath.Join(upper, p)); err != nil || !info.IsDir() {
				missing = append(missing, p)
			}
		}
		// The directory that is itself an output is not created:
		// only its parent.
		if _, err := os.Stat(filepath.Join(upper, "work/gen/out")); err == nil {
			missing = append(missing, "work/gen/out exists before the run")
		}
		if err := os.WriteFile(filepath.Join(upper, "work/obj/x86/main.o"), []byte("object"), 0o644); err != nil {
			return nil, err
		}
		return &sandbox.Result{}, nil
	}
	command := &remoteexecution.Command{
		Arguments:         []string{"cc", "-c", "../src/main.c"},
		WorkingDirectory:  "work",
		OutputFiles:       []string{"obj/x86/main.o"},
		OutputDirectories: []string{"gen/out"},
	}
	response := f.executor().Execute(context.Background(), f.request(&remoteexecution.Action{InputRootDigest: rootDigest.GetProto()}, command), NoopObserver)
	if response.Status.GetCode() != int32(codes.OK) {
		t.Fatalf("status %v", response.Status)
	}
	if len(missing) != 0 {
		t.Errorf("before the run: %v missing, want the working directory and every output's parent", missing)
	}
	if spec := f.runner.runs()[0]; spec.WorkingDirectory != "work" {
		t.Errorf("working directory %q, want work", spec.WorkingDirectory)
	}
	files := response.Result.OutputFiles
	if len(files) != 1 || files[0].Path != "obj/x86/main.o" {
		t.Fatalf("output files %v, want obj/x86/main.o", files)
	}
	if got := string(readBlob(t, f.storage, files[0].Digest)); got != "object" {
		t.Errorf("main.o holds %q", got)
	}
}

// What a client got wrong is refused with its code and a message
// naming the problem, before anything is materialised or run.
func TestLocalExecutorRefusesBadActionsWithTheirCodes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		action      *remoteexecution.Action
		command     *remoteexecution.Command
		instance    string
		wantCode    codes.Code
		wantMessage string
	}{
		{"no arguments", &remoteexecution.Action{}, &remoteexecution.Command{}, "", codes.InvalidArgument, "The command has no arguments"},
		{"timeout over the maximum", &remoteexecution.Action{Timeout: durationpb.New(2 * time.Hour)}, trueCommand, "", codes.InvalidArgument, "Timeout of 2h0m0s is outside the permitted range [0s, 1h0m0s]"},
		{"negative timeout", &remoteexecution.Action{Timeout: durationpb.New(-time.Second)}, trueCommand, "", codes.InvalidArgument, "outside the permitted range"},
		{"invalid timeout", &remoteexecution.Action{Timeout: &durationpb.Duration{Seconds: 1, Nanos: -1}}, trueCommand, "", codes.InvalidArgument, "Invalid action timeout"},
		{"absolute output path", &remoteexecution.Action{}, &remoteexecution.Command{Arguments: []string{"x"}, OutputPaths: []string{"/etc/passwd"}}, "", codes.InvalidArgument, `Output path "/etc/passwd" is absolute`},
		{"output leaving the root", &remoteexecution.Action{}, &remoteexecution.Command{Arguments: []string{"x"}, OutputPaths: []string{"../up"}}, "", codes.InvalidArgument, "leaves the input root"},
		{"absolute working directory", &remoteexecution.Action{}, &remoteexecution.Command{Arguments: []string{"x"}, WorkingDirectory: "/src"}, "", codes.InvalidArgument, `The working directory "/src" is absolute`},
		{"the input root on an ordinary instance", &remoteexecution.Action{}, &remoteexecution.Command{Arguments: []string{"x"}, OutputPaths: []string{"."}}, "main", codes.InvalidArgument, `Output path "." is the input root itself`},
		{"platform not offered", &remoteexecution.Action{Platform: platformOf("OSFamily", "windows")}, trueCommand, "", codes.FailedPrecondition, `platform properties OSFamily="windows"`},
		{"platform of the Command not offered", &remoteexecution.Action{}, &remoteexecution.Command{Arguments: []string{"x"}, Platform: platformOf("ISA", "sparc")}, "", codes.FailedPrecondition, `ISA="sparc"`},
		{"NUL in an argument", &remoteexecution.Action{}, &remoteexecution.Command{Arguments: []string{"a\x00b"}}, "", codes.InvalidArgument, "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newExecutorFixture(t)
			f.options.Platform = PlatformOffer{Platform: HostPlatform(), Matching: PlatformMatchLexicon}
			request := f.request(tc.action, tc.command)
			instance, err := digest.NewInstanceName(tc.instance)
			if err != nil {
				t.Fatal(err)
			}
			request.InstanceName = instance
			stages := &stageRecorder{}
			response := f.executor().Execute(context.Background(), request, stages.observe)
			st := status.FromProto(response.Status)
			if st.Code() != tc.wantCode || !strings.Contains(st.Message(), tc.wantMessage) {
				t.Errorf("%v %q, want %v mentioning %q", st.Code(), st.Message(), tc.wantCode, tc.wantMessage)
			}
			if n := f.materializer.callCount(); n != 0 {
				t.Errorf("input root materialised %d times for a refused action", n)
			}
			if n := len(f.runner.runs()); n != 0 {
				t.Errorf("refused action ran %d times", n)
			}
			if got, want := stages.seen(), []Stage{StageStarted, StageFetchingInputs}; !reflect.DeepEqual(got, want) {
				t.Errorf("stages %v, want %v", got, want)
			}
			if response.Result.GetExecutionMetadata().GetWorkerCompletedTimestamp() == nil {
				t.Error("a refused action has no completion timestamp")
			}
		})
	}
}

// A missing Action or Command is the MISSING precondition failure
// REAPI prescribes, naming the blob, so that the client uploads it.
func TestLocalExecutorReportsAMissingActionOrCommandAsMissing(t *testing.T) {
	f := newExecutorFixture(t)
	e := f.executor()
	checkMissing := func(t *testing.T, response *remoteexecution.ExecuteResponse, want digest.Digest, what string) {
		t.Helper()
		st := status.FromProto(response.Status)
		if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), what) {
			t.Fatalf("%v %q, want FAILED_PRECONDITION naming the %s", st.Code(), st.Message(), what)
		}
		var violations []*errdetails.PreconditionFailure_Violation
		for _, d := range st.Details() {
			if pf, ok := d.(*errdetails.PreconditionFailure); ok {
				violations = append(violations, pf.Violations...)
			}
		}
		subject := fmt.Sprintf("blobs/%s/%d", want.GetHashString(), want.GetSizeBytes())
		if len(violations) != 1 || violations[0].Type != "MISSING" || violations[0].Subject != subject {
			t.Errorf("violations %v, want one MISSING %s", violations, subject)
		}
	}

	t.Run("action", func(t *testing.T) {
		absent := digestOfBytes([]byte("no such action"))
		response := e.Execute(context.Background(), &Request{DigestFunction: testFunction, ActionDigest: absent}, NoopObserver)
		checkMissing(t, response, absent, "Failed to obtain the action")
	})
	t.Run("command", func(t *testing.T) {
		absent := digestOfBytes([]byte("no such command"))
		action := &remoteexecution.Action{CommandDigest: absent.GetProto(), InputRootDigest: digestOfBytes(nil).GetProto()}
		request := &Request{DigestFunction: testFunction, ActionDigest: putMessage(t, f.storage, action)}
		checkMissing(t, e.Execute(context.Background(), request, NoopObserver), absent, "Failed to obtain the command")
	})
	if n := f.materializer.callCount(); n != 0 {
		t.Errorf("materialised %d times without an action", n)
	}
}

// An Action the front end sent inline is not fetched again.
func TestLocalExecutorUsesAnInlineAction(t *testing.T) {
	f := newExecutorFixture(t)
	action := &remoteexecution.Action{
		CommandDigest:   putMessage(t, f.storage, trueCommand).GetProto(),
		InputRootDigest: putMessage(t, f.storage, &remoteexecution.Directory{}).GetProto(),
		Timeout:         durationpb.New(5 * time.Second),
	}
	request := &Request{DigestFunction: testFunction, ActionDigest: digestOfBytes([]byte("not stored")), Action: action}
	response := f.executor().Execute(context.Background(), request, NoopObserver)
	if response.Status.GetCode() != int32(codes.OK) {
		t.Fatalf("status %v, want OK without the Action in the CAS", response.Status)
	}
	if spec := f.runner.runs()[0]; spec.Timeout != 5*time.Second {
		t.Errorf("timeout %v, want the inline action's 5s", spec.Timeout)
	}
}

// "." is the whole input root: a whole-root instance name (or a
// runner that makes every input root "/") may ask for it, and the
// sandbox's own mount points do not come back in it.
func TestLocalExecutorWholeRootOutputs(t *testing.T) {
	for _, tc := range []struct {
		name           string
		instance       string
		execRootIsRoot bool
		wantSpecRoot   bool
	}{
		{"whole-root instance name", "main/whole-root", false, true},
		{"runner with every root as /", "main", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newExecutorFixture(t)
			f.options.ExecRootIsRoot = tc.execRootIsRoot
			// The input has its own tmp, which stays.
			if err := os.Mkdir(filepath.Join(f.materializer.layer, "tmp"), 0o755); err != nil {
				t.Fatal(err)
			}
			f.runner.run = func(ctx context.Context, spec *sandbox.Spec) (*sandbox.Result, error) {
				upper := spec.Mounts[0].UpperDir
				for _, d := range []string{"dev", "proc", "tmp"} {
					if err := os.Mkdir(filepath.Join(upper, d), 0o755); err != nil {
						return nil, err
					}
				}
				// What the action left in a mount point stays.
				if err := os.WriteFile(filepath.Join(upper, "dev", "made"), nil, 0o644); err != nil {
					return nil, err
				}
				return &sandbox.Result{}, nil
			}
			var left []string
			f.outputs.captureHook = func(uppers []string) { left = entries(t, uppers[0]) }
			request := f.request(&remoteexecution.Action{}, &remoteexecution.Command{Arguments: []string{"x"}, OutputPaths: []string{"."}})
			instance, err := digest.NewInstanceName(tc.instance)
			if err != nil {
				t.Fatal(err)
			}
			request.InstanceName = instance
			response := f.executor().Execute(context.Background(), request, NoopObserver)
			if response.Status.GetCode() != int32(codes.OK) {
				t.Fatalf("status %v", response.Status)
			}
			if spec := f.runner.runs()[0]; spec.ExecRootIsRoot != tc.wantSpecRoot {
				t.Errorf("spec.ExecRootIsRoot %v, want %v", spec.ExecRootIsRoot, tc.wantSpecRoot)
			}
			if want := []string{"dev", "tmp"}; !reflect.DeepEqual(left, want) {
				t.Errorf("upper directory at capture holds %v, want %v (empty proc removed, dev not empty, tmp in the input)", left, want)
			}
		})
	}
}
