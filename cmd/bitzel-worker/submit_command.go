package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/client"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
)

// submitFlags are the settings of `submit`.
type submitFlags struct {
	inputs, layers, env, outputs, platform listFlag
	remote, instance, defaultPATH          string
	cwd, download, nodeProperties          string
	timeout                                time.Duration
	skipCache, doNotCache                  bool
	jsonOutput, quiet                      bool
	preserveMtimes, preserveModes          bool
}

func (f *submitFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.remote, "remote", "grpc://127.0.0.1:8980", "REAPI endpoint, grpc://HOST:PORT or grpcs://HOST:PORT")
	fs.StringVar(&f.instance, "instance", "", "instance name")
	fs.Var(&f.inputs, "input", "local `DIR` as the input root, or PATH=DIR to place it at PATH; repeat")
	fs.Var(&f.layers, "layer", "`PATH=DIR[,DIR...]`: the directory at PATH is the union of its own entries over these trees, topmost first (bitzel.layers); repeat")
	fs.Var(&f.env, "env", "environment `VAR=VALUE`; repeat (the whole environment, with -default-path)")
	fs.StringVar(&f.defaultPATH, "default-path", client.DefaultPATH, "`PATH` sent when no --env PATH=... is given (empty: none; the worker adds no environment of its own)")
	fs.Var(&f.outputs, "output", "output `PATH` relative to the working directory (file or directory); repeat")
	fs.Var(&f.platform, "platform", "platform property `NAME=VALUE`; repeat")
	fs.StringVar(&f.cwd, "cwd", "", "working directory relative to the input root")
	fs.StringVar(&f.download, "download", ".", "local `DIR` the outputs are written under")
	fs.DurationVar(&f.timeout, "timeout", 0, "action timeout (0: the server's default)")
	fs.StringVar(&f.nodeProperties, "node-properties", "unix_mode,mtime", "comma-separated output node properties to ask for (unix_mode, mtime); the outputs are written with them")
	fs.BoolVar(&f.skipCache, "skip-cache", false, "run even if the Action Cache has a result")
	fs.BoolVar(&f.doNotCache, "do-not-cache", false, "do not store the result in the Action Cache")
	fs.BoolVar(&f.jsonOutput, "json", false, "print the ActionResult as JSON on stdout instead of the action's output")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress on stderr")
	fs.BoolVar(&f.preserveMtimes, "preserve-mtimes", false, "send input files' modification times (mtime node property), for tasks whose make must see an earlier task's timestamps")
	fs.BoolVar(&f.preserveModes, "preserve-modes", true, "send input files' permission bits (unix_mode node property)")
}

// submitCommand is the client side of remote mode: it uploads a task's
// inputs, runs it on a REAPI endpoint and brings its outputs back, for
// bitzel and for a person debugging a task.
func submitCommand(args []string) int {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: bitzel-worker submit [flags] -- CMD [ARGS...]

Uploads the inputs (only what the CAS lacks), executes CMD on a REAPI
endpoint (serve, a Buildbarn frontend, ...), prints its stdout and stderr,
writes its outputs under --download with their modes, and exits with its
exit code (124 on timeout, 125 when it could not be run).

`)
		printVisibleDefaults(fs)
	}
	var f submitFlags
	f.register(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	argv := fs.Args()
	if len(argv) == 0 {
		usageError("submit", "missing the command to run: submit [flags] -- CMD [ARGS...]")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	response, err := submit(ctx, &f, argv, newProgressPrinter(f.quiet))
	if err != nil {
		return submitFailed("%v", err)
	}
	st := status.FromProto(response.Status)
	switch st.Code() {
	case codes.OK:
		return int(response.Result.GetExitCode())
	case codes.DeadlineExceeded:
		fmt.Fprintf(os.Stderr, "bitzel-worker submit: %s\n", st.Message())
		return 124
	default:
		return submitFailed("the action could not be run: %v: %s", st.Code(), st.Message())
	}
}

// submitFailed says why submit could not run the action, and gives
// its exit code for that.
func submitFailed(format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "bitzel-worker submit: "+format+"\n", a...)
	return 125
}

// submit uploads what the remote lacks of argv's action, executes it,
// writes its outputs and shows its logs or (with -json) its result.
func submit(ctx context.Context, f *submitFlags, argv []string, progress *progressPrinter) (*remoteexecution.ExecuteResponse, error) {
	function := digest.MustNewFunction(f.instance, remoteexecution.DigestFunction_SHA256)
	builder := client.NewTreeBuilder(function)
	builder.PreserveMtimes = f.preserveMtimes
	builder.PreserveModes = f.preserveModes
	root, err := buildInputRoot(builder, f.inputs, f.layers)
	if err != nil {
		return nil, err
	}
	messages, actionDigest, err := f.action(function, root, argv)
	if err != nil {
		return nil, err
	}
	conn, err := dial(f.remote)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	r := client.NewRemote(conn, f.instance, function)
	directories, files := builder.Blobs()
	for d, data := range directories {
		messages[d] = data
	}
	if err := r.Upload(ctx, messages, files, progress); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	var response *remoteexecution.ExecuteResponse
	if f.jsonOutput {
		response, err = r.Execute(ctx, actionDigest, f.skipCache, progress)
	} else {
		// A long task's output as it is written, when the server
		// names its live logs (serve does; Buildbarn does not, and
		// then it comes with the result).
		response, err = r.ExecuteShowingLogs(ctx, actionDigest, f.skipCache, progress, os.Stdout, os.Stderr)
	}
	if err != nil {
		return nil, err
	}
	if response.Result != nil {
		if err := r.Download(ctx, response.Result, f.download, progress); err != nil {
			return nil, fmt.Errorf("download outputs: %w", err)
		}
	}
	progress.done(response)
	if f.jsonOutput {
		data, err := protojson.MarshalOptions{Multiline: true}.Marshal(response.Result)
		if err != nil {
			return nil, err
		}
		fmt.Println(string(data))
	}
	return response, nil
}

// action encodes the Command and Action of argv over the input root
// root, as the flags say; it returns both messages by digest, and the
// Action's digest.
func (f *submitFlags) action(function digest.Function, root digest.Digest, argv []string) (map[digest.Digest][]byte, digest.Digest, error) {
	command := &remoteexecution.Command{
		Arguments:        argv,
		WorkingDirectory: f.cwd,
		OutputPaths:      append([]string{}, f.outputs...),
	}
	sort.Strings(command.OutputPaths)
	for _, p := range strings.Split(f.nodeProperties, ",") {
		if p = strings.TrimSpace(p); p != "" {
			command.OutputNodeProperties = append(command.OutputNodeProperties, p)
		}
	}
	variables, err := keyValues(f.env, "--env")
	if err != nil {
		return nil, digest.BadDigest, err
	}
	command.EnvironmentVariables = client.Environment(variables, f.defaultPATH)
	properties, err := keyValues(f.platform, "--platform")
	if err != nil {
		return nil, digest.BadDigest, err
	}
	var platformMessage *remoteexecution.Platform
	if len(properties) > 0 {
		platformMessage = &remoteexecution.Platform{}
		for _, kv := range properties {
			platformMessage.Properties = append(platformMessage.Properties, &remoteexecution.Platform_Property{Name: kv[0], Value: kv[1]})
		}
		command.Platform = platformMessage
	}
	commandDigest, commandData, err := client.Encode(function, command)
	if err != nil {
		return nil, digest.BadDigest, err
	}
	action := &remoteexecution.Action{CommandDigest: commandDigest.GetProto(), InputRootDigest: root.GetProto(), DoNotCache: f.doNotCache, Platform: platformMessage}
	if f.timeout > 0 {
		action.Timeout = durationpb.New(f.timeout)
	}
	actionDigest, actionData, err := client.Encode(function, action)
	if err != nil {
		return nil, digest.BadDigest, err
	}
	return map[digest.Digest][]byte{commandDigest: commandData, actionDigest: actionData}, actionDigest, nil
}

// buildInputRoot hashes the input directories and declares the layers.
func buildInputRoot(builder *client.TreeBuilder, inputs, layers []string) (digest.Digest, error) {
	root, err := builder.AddMessage(&remoteexecution.Directory{})
	if err != nil {
		return root, err
	}
	for _, input := range inputs {
		path, dir, placed := strings.Cut(input, "=")
		if !placed {
			path, dir = "", input
		}
		if path == "" {
			if root, err = builder.AddDirectory(dir); err != nil {
				return root, fmt.Errorf("--input %s: %w", input, err)
			}
			continue
		}
		tree, err := builder.AddDirectory(dir)
		if err != nil {
			return root, fmt.Errorf("--input %s: %w", input, err)
		}
		if root, err = builder.Place(root, path, tree); err != nil {
			return root, fmt.Errorf("--input %s: %w", input, err)
		}
	}
	for _, layer := range layers {
		path, dirs, ok := strings.Cut(layer, "=")
		if !ok || dirs == "" {
			return root, fmt.Errorf("--layer %q: want PATH=DIR[,DIR...]", layer)
		}
		var trees []digest.Digest
		for _, dir := range strings.Split(dirs, ",") {
			tree, err := builder.AddDirectory(dir)
			if err != nil {
				return root, fmt.Errorf("--layer %s: %w", layer, err)
			}
			trees = append(trees, tree)
		}
		if root, err = builder.WithLayers(root, path, trees); err != nil {
			return root, fmt.Errorf("--layer %s: %w", layer, err)
		}
	}
	return root, nil
}

func keyValues(values []string, flagName string) ([][2]string, error) {
	var result [][2]string
	for _, v := range values {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want NAME=VALUE", flagName, v)
		}
		result = append(result, [2]string{k, val})
	}
	// The REAPI wants both lists sorted by name.
	sort.SliceStable(result, func(i, j int) bool { return result[i][0] < result[j][0] })
	return result, nil
}

func dial(remote string) (*grpc.ClientConn, error) {
	var creds credentials.TransportCredentials
	switch {
	case strings.HasPrefix(remote, "grpc://"):
		creds = insecure.NewCredentials()
		remote = strings.TrimPrefix(remote, "grpc://")
	case strings.HasPrefix(remote, "grpcs://"):
		creds = credentials.NewTLS(&tls.Config{})
		remote = strings.TrimPrefix(remote, "grpcs://")
	default:
		return nil, fmt.Errorf("--remote %q: want grpc://HOST:PORT or grpcs://HOST:PORT", remote)
	}
	return grpc.NewClient(remote, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
}

// progressPrinter shows on stderr what submit is doing.
type progressPrinter struct {
	quiet       bool
	start       time.Time
	lastUpload  time.Time
	uploadShown bool
}

func newProgressPrinter(quiet bool) *progressPrinter {
	return &progressPrinter{quiet: quiet, start: time.Now()}
}

func (p *progressPrinter) printf(format string, a ...any) {
	if !p.quiet {
		fmt.Fprintf(os.Stderr, "bitzel-worker submit: [%5.1fs] "+format+"\n", append([]any{time.Since(p.start).Seconds()}, a...)...)
	}
}

func (p *progressPrinter) Uploading(done, total int, doneBytes, totalBytes int64) {
	// The first, the last, and at most one line a second between.
	if done != 0 && done != total && time.Since(p.lastUpload) < time.Second {
		return
	}
	if done == 0 && p.uploadShown {
		return
	}
	p.uploadShown = true
	p.lastUpload = time.Now()
	p.printf("uploaded %d/%d missing blobs (%s/%s)", done, total, humanBytes(doneBytes), humanBytes(totalBytes))
}

func (p *progressPrinter) Stage(stage remoteexecution.ExecutionStage_Value) {
	p.printf("%s", strings.ToLower(strings.ReplaceAll(stage.String(), "_", " ")))
}

func (p *progressPrinter) Downloading(done, total int) {
	if done == 0 && total > 0 {
		p.printf("fetching %d outputs", total)
	}
}

func (p *progressPrinter) done(response *remoteexecution.ExecuteResponse) {
	cached := ""
	if response.CachedResult {
		cached = " (Action Cache hit)"
	}
	p.printf("done: exit code %d%s", response.Result.GetExitCode(), cached)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
