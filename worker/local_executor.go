package worker

import (
	"context"
	"fmt"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/images"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/outputs"
	"github.com/bitzel/bitzel-worker/sandbox"
	"github.com/bitzel/bitzel-worker/sandbox/child"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// LocalExecutorOptions configure the executor that runs actions on
// this machine.
type LocalExecutorOptions struct {
	Storage      *storage.Storage
	Materializer layers.Materializer
	Outputs      outputs.OutputCapturer
	Runner       sandbox.Runner
	// BuildDirectory holds each running action's upper, work and log
	// files. It is wiped at start-up.
	BuildDirectory string
	// WorkerName goes into ExecutedActionMetadata.worker.
	WorkerName string
	// Platform is what this worker offers and how actions are matched
	// against it; an action asking for a property it lacks is refused.
	Platform PlatformOffer
	// DefaultTimeout applies to actions without one; MaximumTimeout
	// bounds what an action may ask for.
	DefaultTimeout time.Duration
	MaximumTimeout time.Duration
	// OutputLimitBytes caps each of stdout and stderr.
	OutputLimitBytes int64
	// Limits bound each action's resources.
	Limits sandbox.Limits
	// ExecRootIsRoot: the runner makes every action's input root its
	// "/" (-hermetic), so outputs "." and paths climbing back to the
	// input root are accepted for every action, not only for
	// whole-root instance names (see IsWholeRootInstanceName).
	ExecRootIsRoot bool
	// ContainerImages holds the images the operator made available
	// locally; nil: none. An action whose platform names one runs
	// with the image's layers under its input root, the input root
	// being "/" (see containerImage).
	ContainerImages *images.Store
}

type localExecutor struct {
	options     LocalExecutorOptions
	platform    *platformMatcher
	directories *actionDirectories
}

// NewLocalExecutor creates the Executor at the bottom of every
// decorator stack: it fetches, materialises, runs and uploads.
func NewLocalExecutor(options LocalExecutorOptions) (Executor, error) {
	if err := fsutil.RemoveAll(options.BuildDirectory); err != nil {
		return nil, fmt.Errorf("wipe build directory: %w", err)
	}
	if err := os.MkdirAll(options.BuildDirectory, 0o711); err != nil {
		return nil, fmt.Errorf("create build directory: %w", err)
	}
	return &localExecutor{
		options:     options,
		platform:    newPlatformMatcher(options.Platform),
		directories: &actionDirectories{root: options.BuildDirectory},
	}, nil
}

// execution is the state of one action as it goes through the stages.
type execution struct {
	request  *Request
	action   *remoteexecution.Action
	command  *remoteexecution.Command
	metadata *remoteexecution.ExecutedActionMetadata
	result   *remoteexecution.ActionResult
	// message explains a result a person might not expect.
	message string
}

func (e *localExecutor) Execute(ctx context.Context, request *Request, observer Observer) *remoteexecution.ExecuteResponse {
	x := &execution{
		request: request,
		metadata: &remoteexecution.ExecutedActionMetadata{
			Worker:               e.options.WorkerName,
			QueuedTimestamp:      request.QueuedTimestamp,
			WorkerStartTimestamp: timestamppb.Now(),
			AuxiliaryMetadata:    append([]*anypb.Any{}, request.AuxiliaryMetadata...),
		},
		result: &remoteexecution.ActionResult{},
	}
	x.result.ExecutionMetadata = x.metadata
	observer(StageStarted)
	err := e.execute(ctx, x, observer)
	if storage.IsOutOfSpace(err) {
		err = util.StatusWrapWithCode(err, codes.ResourceExhausted, "The worker is out of disk space")
	}
	x.metadata.WorkerCompletedTimestamp = timestamppb.Now()
	response := &remoteexecution.ExecuteResponse{Result: x.result, Message: x.message}
	if err != nil {
		response.Status = status.Convert(err).Proto()
	}
	return response
}

func (e *localExecutor) execute(ctx context.Context, x *execution, observer Observer) error {
	observer(StageFetchingInputs)
	x.metadata.InputFetchStartTimestamp = timestamppb.Now()
	// The Command is fetched within the action's own timeout when the
	// front end sent the Action (Buildbarn's scheduler does), else
	// within the default one.
	fetchBudget := e.options.DefaultTimeout
	if x.request.Action != nil {
		if t, err := e.timeout(x.request.Action); err == nil {
			fetchBudget = t
		}
	}
	fetchCtx, cancelFetch := context.WithTimeout(ctx, e.ioBudget(fetchBudget))
	err := retryUnavailable(fetchCtx, "Fetching the action and command", func(ctx context.Context) error {
		return e.fetchActionAndCommand(ctx, x)
	})
	cancelFetch()
	if err != nil {
		return err
	}
	wholeRoot := IsWholeRootInstanceName(x.request.InstanceName)
	// inputRootIsSlash: the action sees its input root as "/", chosen
	// for this action by its instance name or for all by the runner.
	imageRef := containerImage(actionPlatform(x.action, x.command))
	inputRootIsSlash := wholeRoot || e.options.ExecRootIsRoot || imageRef != ""
	checked, err := e.check(x.action, x.command, inputRootIsSlash)
	if err != nil {
		return err
	}
	var image *images.Image
	if imageRef != "" {
		if e.options.ContainerImages == nil {
			return status.Errorf(codes.FailedPrecondition, "Container image %q is not available on this worker; to provide it, %s", imageRef, images.HowToProvide)
		}
		if image, err = e.options.ContainerImages.Get(imageRef); err != nil {
			return err
		}
	}
	timeout, workingDirectory, outputPaths := checked.timeout, checked.workingDirectory, checked.outputPaths

	rootDigest, err := x.request.DigestFunction.NewDigestFromProto(x.action.InputRootDigest)
	if err != nil {
		return util.StatusWrap(err, "Invalid input root digest")
	}
	// Fetching inputs and, later, uploading outputs may each take as
	// long as the action may run: a CAS that hangs fails the action
	// within that, instead of holding the worker for ever.
	var root *layers.InputRoot
	inputCtx, cancelInputs := context.WithTimeout(ctx, e.ioBudget(timeout))
	err = retryUnavailable(inputCtx, "Materialising the input root", func(ctx context.Context) error {
		var err error
		root, err = e.options.Materializer.Materialize(ctx, x.request.InstanceName, rootDigest)
		return err
	})
	cancelInputs()
	if err != nil {
		return util.StatusWrap(err, "Failed to materialise the input root")
	}
	defer root.Release()
	reportInputLayers(ctx, root)
	if image != nil {
		// The image's root file system lies under the input root,
		// both at "/": the input root's files win over the image's
		// where both have one, and outputs are read from the whole
		// merged view. A copy: the materialiser owns the slice.
		m := &root.Mounts[0]
		if n := len(m.Layers) + len(image.Layers); n > child.MaxLowers {
			return status.Errorf(codes.FailedPrecondition, "The input root's %d layers and container image %q's %d layers make %d lower layers of the root overlay, over the kernel's limit of %d: use an image of fewer layers (flatten it) or a smaller input root", len(m.Layers), imageRef, len(image.Layers), n, child.MaxLowers)
		}
		m.Layers = append(append([]string{}, m.Layers...), image.Layers...)
	}

	actionDir, err := e.directories.get(len(root.Mounts))
	if err != nil {
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to create the action directory")
	}
	// Taken back once the sandbox is gone; a sandbox that failed
	// leaves it in an unknown state, and it is not reused.
	var reusable bool
	var released <-chan struct{}
	defer func() {
		if !reusable {
			e.directories.discard(actionDir)
			return
		}
		go func() {
			if released != nil {
				<-released
			}
			e.directories.put(actionDir)
		}()
	}()
	dir := actionDir.path
	mounts := make([]sandbox.Mount, len(root.Mounts))
	uppers := make([]string, len(root.Mounts))
	for i, m := range root.Mounts {
		uppers[i] = actionDir.upper(i)
		mounts[i] = sandbox.Mount{Path: m.Path, Layers: m.Layers, UpperDir: uppers[i], WorkDir: actionDir.work(i)}
	}
	// Clients of REAPI 2.0 (Bazel 4) expect the parents of outputs and
	// the working directory to exist before the action runs.
	for _, p := range append([]string{workingDirectory}, outputPaths...) {
		parent := p
		if p != workingDirectory {
			parent = path.Dir(p)
		}
		if err := outputs.MkdirAll(root, uppers, parent); err != nil {
			return util.StatusWrapf(err, "Failed to create the parent directory of output %q", p)
		}
	}
	x.metadata.InputFetchCompletedTimestamp = timestamppb.Now()

	observer(StageRunning)
	stdout, stderr := newLogBuffer(actionDir.file("stdout")), newLogBuffer(actionDir.file("stderr"))
	stdoutWriter, stderrWriter, closeLiveLogs := offerLiveLogs(ctx, stdout, stderr)
	defer closeLiveLogs()
	spec := &sandbox.Spec{
		Mounts:           mounts,
		Argv:             x.command.Arguments,
		Env:              environment(x.command),
		WorkingDirectory: workingDirectory,
		Timeout:          timeout,
		Stdout:           stdoutWriter,
		Stderr:           stderrWriter,
		OutputLimitBytes: e.options.OutputLimitBytes,
		Limits:           e.options.Limits,
		ExecRootIsRoot:   wholeRoot || image != nil,
	}
	x.metadata.ExecutionStartTimestamp = timestamppb.Now()
	run, err := e.options.Runner.Run(ctx, spec)
	x.metadata.ExecutionCompletedTimestamp = timestamppb.Now()
	if err == nil {
		reusable, released = true, run.Released
		// With a disk budget the action wrote to a tmpfs of its
		// own, which lives until its outputs are captured.
		uppers = run.UpperDirs(spec)
		if run.DiskBudget != nil {
			defer run.DiskBudget.Close()
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to run the action")
	}
	x.result.ExitCode = int32(run.ExitCode)
	x.message = describeRun(run, e.options.Limits, e.options.OutputLimitBytes, spec.Env)
	if usage := resourceUsage(run); usage != nil {
		x.metadata.AuxiliaryMetadata = append(x.metadata.AuxiliaryMetadata, usage)
	}
	if events := limitEvents(run, e.options.Limits); events != "" {
		reason := events + "; the result is not written to the Action Cache"
		x.metadata.AuxiliaryMetadata = append(x.metadata.AuxiliaryMetadata, notCachedMetadata(reason))
		x.message = joinMessages(x.message, "the result is not written to the Action Cache")
	}

	observer(StageUploadingOutputs)
	x.metadata.OutputUploadStartTimestamp = timestamppb.Now()
	uploadCtx, cancelUpload := context.WithTimeout(ctx, e.ioBudget(timeout))
	defer cancelUpload()
	// Logs first: a timed-out or failed action still shows them.
	for _, log := range []struct {
		buffer *logBuffer
		digest **remoteexecution.Digest
	}{
		{stdout, &x.result.StdoutDigest},
		{stderr, &x.result.StderrDigest},
	} {
		var d digest.Digest
		err := retryUnavailable(uploadCtx, "Uploading the action's log", func(ctx context.Context) error {
			var err error
			d, err = log.buffer.upload(ctx, e.options.Outputs, x.request.InstanceName, x.request.DigestFunction)
			return err
		})
		if err != nil {
			return util.StatusWrap(err, "Failed to upload the action's log")
		}
		*log.digest = d.GetProto()
	}
	if run.DiskBudgetExceeded {
		return status.Errorf(codes.ResourceExhausted, "The action's writes filled its disk budget of %d bytes (exec root); it exited with %d", e.options.Limits.DiskBytes, run.ExitCode)
	}
	if inputRootIsSlash {
		removeSandboxMountPoints(root, uppers)
	}
	var outputs *remoteexecution.ActionResult
	err = retryUnavailable(uploadCtx, "Uploading outputs", func(ctx context.Context) error {
		var err error
		outputs, err = e.options.Outputs.Capture(ctx, x.request.InstanceName, root, uppers, x.command)
		return err
	})
	if err != nil {
		return util.StatusWrap(err, "Failed to capture outputs")
	}
	mergeOutputs(x.result, outputs)
	x.metadata.OutputUploadCompletedTimestamp = timestamppb.Now()

	if run.TimedOut {
		return status.Errorf(codes.DeadlineExceeded, "Action timed out after %v; every process of it was killed", timeout)
	}
	// A command that failed while the worker's disk was full most
	// likely failed because of it: that is the worker's condition to
	// report (and a client's reason to retry elsewhere), not a result
	// to show as the build's failure.
	if run.ExitCode != 0 {
		if free, ok := freeBytes(dir); ok && free < minimumFreeBytes {
			return status.Errorf(codes.ResourceExhausted, "The worker's disk filled up while the action ran (%d bytes free); it exited with %d", free, run.ExitCode)
		}
	}
	return nil
}

func (e *localExecutor) fetchActionAndCommand(ctx context.Context, x *execution) error {
	storage := e.options.Storage
	x.action = x.request.Action
	if x.action == nil {
		action, err := fetchMessage(ctx, storage, x.request.ActionDigest, &remoteexecution.Action{})
		if err != nil {
			return util.StatusWrap(err, "Failed to obtain the action")
		}
		x.action = action
	}
	commandDigest, err := x.request.DigestFunction.NewDigestFromProto(x.action.CommandDigest)
	if err != nil {
		return util.StatusWrap(err, "Invalid command digest")
	}
	x.command, err = fetchMessage(ctx, storage, commandDigest, &remoteexecution.Command{})
	if err != nil {
		return util.StatusWrap(err, "Failed to obtain the command")
	}
	return nil
}

// checkedAction is what execute takes from a client's Action and
// Command once check has accepted them.
type checkedAction struct {
	timeout          time.Duration
	workingDirectory string
	outputPaths      []string
}

// check makes, in order, every check of the client's Action and
// Command that needs nothing but the two messages: all of a client's
// mistakes are refused here, before anything is fetched or run, with
// INVALID_ARGUMENT or FAILED_PRECONDITION naming the field
// (FuzzCommandAndAction feeds it arbitrary messages).
func (e *localExecutor) check(action *remoteexecution.Action, command *remoteexecution.Command, inputRootIsSlash bool) (checkedAction, error) {
	var c checkedAction
	if len(command.Arguments) == 0 {
		return c, status.Error(codes.InvalidArgument, "The command has no arguments")
	}
	if err := validateCommand(command); err != nil {
		return c, err
	}
	var err error
	if c.timeout, err = e.timeout(action); err != nil {
		return c, err
	}
	if err := e.platform.check(actionPlatform(action, command)); err != nil {
		return c, err
	}
	if c.workingDirectory, err = cleanRelativePath(command.WorkingDirectory, "working directory"); err != nil {
		return c, err
	}
	c.outputPaths, err = outputPaths(command, c.workingDirectory, inputRootIsSlash)
	return c, err
}

// ioBudget is how long fetching inputs or uploading outputs may take
// for an action of the given timeout: as long as it may run, and at
// least minimumIOBudget, so that a short action still gets its inputs
// from a slow CAS.
func (e *localExecutor) ioBudget(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		timeout = e.options.DefaultTimeout
	}
	return max(timeout, minimumIOBudget)
}

const minimumIOBudget = 10 * time.Second

// minimumFreeBytes: below this, the worker's disk counts as full.
const minimumFreeBytes = 1 << 20

// freeBytes is the space available to unprivileged writers on the file
// system holding path.
func freeBytes(path string) (int64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * st.Bsize, true
}

func (e *localExecutor) timeout(action *remoteexecution.Action) (time.Duration, error) {
	if action.Timeout == nil {
		return e.options.DefaultTimeout, nil
	}
	if err := action.Timeout.CheckValid(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "Invalid action timeout: %v", err)
	}
	timeout := action.Timeout.AsDuration()
	if timeout < 0 || (e.options.MaximumTimeout > 0 && timeout > e.options.MaximumTimeout) {
		return 0, status.Errorf(codes.InvalidArgument, "Timeout of %v is outside the permitted range [0s, %v]", timeout, e.options.MaximumTimeout)
	}
	if timeout == 0 {
		return e.options.DefaultTimeout, nil
	}
	return timeout, nil
}

// containerImage is the value of the action's container-image platform
// property, "" if it has none. Platform matching has already accepted
// it (or refused the action) when this is used.
func containerImage(platform *remoteexecution.Platform) string {
	for _, p := range platform.GetProperties() {
		if p.Name == ContainerImageProperty {
			return p.Value
		}
	}
	return ""
}

// actionPlatform prefers Action.platform (REAPI 2.2+) to the legacy
// Command.platform.
func actionPlatform(action *remoteexecution.Action, command *remoteexecution.Command) *remoteexecution.Platform {
	if action.Platform != nil {
		return action.Platform
	}
	return command.Platform
}

// environment turns the Command's variables into the sandbox's whole
// environment; nothing of the worker's leaks in.
func environment(command *remoteexecution.Command) []string {
	env := make([]string, 0, len(command.EnvironmentVariables))
	for _, v := range command.EnvironmentVariables {
		env = append(env, v.Name+"="+v.Value)
	}
	return env
}

// cleanRelativePath validates a path the client gives relative to the
// exec root, naming it in the error.
func cleanRelativePath(p, what string) (string, error) {
	if p == "" {
		return "", nil
	}
	if strings.HasPrefix(p, "/") {
		return "", status.Errorf(codes.InvalidArgument, "The %s %q is absolute; it must be relative to the input root", what, p)
	}
	clean := path.Clean(p)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", status.Errorf(codes.InvalidArgument, "The %s %q leaves the input root", what, p)
	}
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// outputPaths returns every output path relative to the exec root,
// from output_paths (2.1+) or the legacy fields. The exec root itself
// ("" here) is an output only when wholeRoot: the input root is then
// the action's "/", which BuildStream asks for whole.
func outputPaths(command *remoteexecution.Command, workingDirectory string, wholeRoot bool) ([]string, error) {
	paths := command.OutputPaths
	if len(paths) == 0 {
		paths = append(append([]string{}, command.OutputFiles...), command.OutputDirectories...)
	}
	result := make([]string, 0, len(paths))
	for _, p := range paths {
		if p == "" && len(command.OutputDirectories) > 0 {
			// An empty output directory is the working directory.
			result = append(result, workingDirectory)
			continue
		}
		if strings.HasPrefix(p, "/") {
			return nil, status.Errorf(codes.InvalidArgument, "Output path %q is absolute; it must be relative to the working directory", p)
		}
		joined, err := cleanRelativePath(path.Join(workingDirectory, p), "output path")
		if err != nil {
			return nil, err
		}
		if joined == "" && !wholeRoot {
			return nil, status.Errorf(codes.InvalidArgument, "Output path %q is the input root itself, which only a whole-root action may ask for: send it with an instance name whose last component is %q (such as %q), which makes the input root the action's \"/\"", p, WholeRootInstanceNameComponent, WholeRootInstanceNameComponent)
		}
		result = append(result, joined)
	}
	return result, nil
}

// mergeOutputs copies the output fields Capture filled in.
func mergeOutputs(result, outputs *remoteexecution.ActionResult) {
	result.OutputFiles = outputs.OutputFiles
	result.OutputDirectories = outputs.OutputDirectories
	result.OutputSymlinks = outputs.OutputSymlinks
	result.OutputFileSymlinks = outputs.OutputFileSymlinks
	result.OutputDirectorySymlinks = outputs.OutputDirectorySymlinks
}

// describeRun says why a command ended the way it did when the worker,
// not the command, decided it, and points at an environment without
// PATH when the command failed: the worker rightly invents none (the
// REAPI makes the Command's environment the whole of it), and a
// compiler driver without PATH fails deep inside (gcc: "cannot
// execute 'cc1'").
func describeRun(run *sandbox.Result, limits sandbox.Limits, outputLimit int64, env []string) string {
	var parts []string
	if run.ExitCode != 0 && !hasVariable(env, "PATH") {
		parts = append(parts, fmt.Sprintf("the action's environment has no PATH (%d variables; the worker adds none, the client must send it)", len(env)))
	}
	if events := limitEvents(run, limits); events != "" {
		parts = append(parts, events)
	}
	if run.NotFound {
		parts = append(parts, "the command could not be executed (see stderr)")
	}
	if run.StdoutTruncated || run.StderrTruncated {
		parts = append(parts, fmt.Sprintf("output beyond %d bytes per stream was discarded", outputLimit))
	}
	return strings.Join(parts, "; ")
}

func joinMessages(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func hasVariable(env []string, name string) bool {
	for _, v := range env {
		if strings.HasPrefix(v, name+"=") {
			return true
		}
	}
	return false
}
