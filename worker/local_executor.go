package worker

import (
	"context"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/execroot"
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
	options   LocalExecutorOptions
	platform  *platformMatcher
	execRoots *execroot.Pool
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
		options:   options,
		platform:  newPlatformMatcher(options.Platform),
		execRoots: execroot.NewPool(options.BuildDirectory),
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

	// Known once the Action and Command are fetched and checked
	// (fetchAndCheck).
	checked checkedAction
	// wholeRoot: the instance name asks for the input root as "/";
	// inputRootIsSlash: the action sees it so, for that reason, the
	// runner's or its container image's.
	wholeRoot, inputRootIsSlash bool
	imageRef                    string
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
	if err := e.fetchAndCheck(ctx, x); err != nil {
		return err
	}
	execRoot, err := e.prepareExecRoot(ctx, x)
	if err != nil {
		return err
	}
	defer execRoot.Release()
	x.metadata.InputFetchCompletedTimestamp = timestamppb.Now()

	observer(StageRunning)
	run, logs, err := e.run(ctx, x, execRoot)
	if err != nil {
		return err
	}
	defer logs.close()

	observer(StageUploadingOutputs)
	x.metadata.OutputUploadStartTimestamp = timestamppb.Now()
	if err := e.upload(ctx, x, execRoot, run, logs); err != nil {
		return err
	}
	x.metadata.OutputUploadCompletedTimestamp = timestamppb.Now()
	if run.TimedOut {
		return status.Errorf(codes.DeadlineExceeded, "Action timed out after %v; every process of it was killed", x.checked.timeout)
	}
	// A command that failed while the worker's disk was full most
	// likely failed because of it: that is the worker's condition to
	// report (and a client's reason to retry elsewhere), not a result
	// to show as the build's failure.
	if run.ExitCode != 0 {
		if free, ok := e.execRoots.FreeBytes(); ok && free < minimumFreeBytes {
			return status.Errorf(codes.ResourceExhausted, "The worker's disk filled up while the action ran (%d bytes free); it exited with %d", free, run.ExitCode)
		}
	}
	return nil
}

// fetchAndCheck fetches the Action and Command, checks them, and finds
// the container image the action names.
func (e *localExecutor) fetchAndCheck(ctx context.Context, x *execution) error {
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
	x.wholeRoot = IsWholeRootInstanceName(x.request.InstanceName)
	// inputRootIsSlash: the action sees its input root as "/", chosen
	// for this action by its instance name or for all by the runner.
	x.imageRef = containerImage(actionPlatform(x.action, x.command))
	x.inputRootIsSlash = x.wholeRoot || e.options.ExecRootIsRoot || x.imageRef != ""
	if x.checked, err = e.check(x.action, x.command, x.inputRootIsSlash); err != nil {
		return err
	}
	if x.imageRef != "" {
		if e.options.ContainerImages == nil {
			return status.Errorf(codes.FailedPrecondition, "Container image %q is not available on this worker; to provide it, %s", x.imageRef, images.HowToProvide)
		}
		if err := e.options.ContainerImages.Check(x.imageRef); err != nil {
			return err
		}
	}
	return nil
}

// prepareExecRoot materialises the input root and makes the action's
// exec root over it (and under it, its container image).
func (e *localExecutor) prepareExecRoot(ctx context.Context, x *execution) (*execroot.ExecRoot, error) {
	rootDigest, err := x.request.DigestFunction.NewDigestFromProto(x.action.InputRootDigest)
	if err != nil {
		return nil, util.StatusWrap(err, "Invalid input root digest")
	}
	// Fetching inputs and, later, uploading outputs may each take as
	// long as the action may run: a CAS that hangs fails the action
	// within that, instead of holding the worker for ever.
	var root *layers.InputRoot
	inputCtx, cancelInputs := context.WithTimeout(ctx, e.ioBudget(x.checked.timeout))
	err = retryUnavailable(inputCtx, "Materialising the input root", func(ctx context.Context) error {
		var err error
		root, err = e.options.Materializer.Materialize(ctx, x.request.InstanceName, rootDigest)
		return err
	})
	cancelInputs()
	if err != nil {
		return nil, util.StatusWrap(err, "Failed to materialise the input root")
	}
	reportInputLayers(ctx, root)
	var imageLayers []layers.LayerLease
	if x.imageRef != "" {
		// The image's root file system lies under the input root,
		// both at "/": the input root's files win over the image's
		// where both have one, and outputs are read from the whole
		// merged view.
		image, err := e.options.ContainerImages.Get(ctx, x.imageRef)
		if err != nil {
			root.Release()
			return nil, err
		}
		if n := len(root.Mounts[0].Layers) + len(image.Layers); n > child.MaxLowers {
			root.Release()
			image.Release()
			return nil, status.Errorf(codes.FailedPrecondition, "The input root's %d layers and container image %q's %d layers make %d lower layers of the root overlay, over the kernel's limit of %d: use an image of fewer layers (flatten it) or a smaller input root", len(root.Mounts[0].Layers), x.imageRef, len(image.Layers), n, child.MaxLowers)
		}
		imageLayers = image.Layers
	}
	execRoot, err := e.execRoots.Prepare(root, imageLayers)
	if err != nil {
		return nil, err
	}
	if err := execRoot.CreateParents(x.checked.workingDirectory, x.checked.outputPaths); err != nil {
		execRoot.Release()
		return nil, err
	}
	return execRoot, nil
}

// actionLogs are an action's stdout and stderr, offered as live logs
// while it runs when its front end asks for that.
type actionLogs struct {
	stdout, stderr *logBuffer
	// close withdraws the live logs; it must come before the exec
	// root, which holds their files, is released.
	close func()
}

// run runs the action in its exec root, and says in x how it ended.
func (e *localExecutor) run(ctx context.Context, x *execution, execRoot *execroot.ExecRoot) (*sandbox.Result, *actionLogs, error) {
	logs := &actionLogs{stdout: newLogBuffer(execRoot.LogPath("stdout")), stderr: newLogBuffer(execRoot.LogPath("stderr"))}
	stdoutWriter, stderrWriter, closeLiveLogs := offerLiveLogs(ctx, logs.stdout, logs.stderr)
	logs.close = closeLiveLogs
	spec := &sandbox.Spec{
		Mounts:           execRoot.Mounts(),
		Argv:             x.command.Arguments,
		Env:              environment(x.command),
		WorkingDirectory: x.checked.workingDirectory,
		Timeout:          x.checked.timeout,
		Stdout:           stdoutWriter,
		Stderr:           stderrWriter,
		OutputLimitBytes: e.options.OutputLimitBytes,
		Limits:           e.options.Limits,
		ExecRootIsRoot:   x.wholeRoot || x.imageRef != "",
	}
	x.metadata.ExecutionStartTimestamp = timestamppb.Now()
	run, err := e.options.Runner.Run(ctx, spec)
	x.metadata.ExecutionCompletedTimestamp = timestamppb.Now()
	if err != nil {
		closeLiveLogs()
		if ctx.Err() != nil {
			return nil, nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, nil, storage.WrapFileSystemErrorWithCode(err, codes.Internal, "Failed to run the action")
	}
	// With a disk budget the action wrote to a tmpfs of its own,
	// which lives until the exec root is released.
	execRoot.Ran(run)
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
	return run, logs, nil
}

// upload uploads the action's logs, then captures and uploads its
// outputs, into x's result.
func (e *localExecutor) upload(ctx context.Context, x *execution, execRoot *execroot.ExecRoot, run *sandbox.Result, logs *actionLogs) error {
	uploadCtx, cancelUpload := context.WithTimeout(ctx, e.ioBudget(x.checked.timeout))
	defer cancelUpload()
	// Logs first: a timed-out or failed action still shows them.
	for _, log := range []struct {
		buffer *logBuffer
		digest **remoteexecution.Digest
	}{
		{logs.stdout, &x.result.StdoutDigest},
		{logs.stderr, &x.result.StderrDigest},
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
	if x.inputRootIsSlash {
		execRoot.RemoveSandboxMountPoints()
	}
	var outputs *remoteexecution.ActionResult
	err := retryUnavailable(uploadCtx, "Uploading outputs", func(ctx context.Context) error {
		var err error
		outputs, err = e.options.Outputs.Capture(ctx, x.request.InstanceName, execRoot.Inputs(), execRoot.UpperDirs(), x.command)
		return err
	})
	if err != nil {
		return util.StatusWrap(err, "Failed to capture outputs")
	}
	mergeOutputs(x.result, outputs)
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
