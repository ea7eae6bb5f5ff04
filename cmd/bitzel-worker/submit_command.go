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
	var inputs, layers, env, outputs, platform listFlag
	remote := fs.String("remote", "grpc://127.0.0.1:8980", "REAPI endpoint, grpc://HOST:PORT or grpcs://HOST:PORT")
	instance := fs.String("instance", "", "instance name")
	fs.Var(&inputs, "input", "local `DIR` as the input root, or PATH=DIR to place it at PATH; repeat")
	fs.Var(&layers, "layer", "`PATH=DIR[,DIR...]`: the directory at PATH is the union of its own entries over these trees, topmost first (bitzel.layers); repeat")
	fs.Var(&env, "env", "environment `VAR=VALUE`; repeat (the whole environment, with -default-path)")
	defaultPATH := fs.String("default-path", client.DefaultPATH, "`PATH` sent when no --env PATH=... is given (empty: none; the worker adds no environment of its own)")
	fs.Var(&outputs, "output", "output `PATH` relative to the working directory (file or directory); repeat")
	fs.Var(&platform, "platform", "platform property `NAME=VALUE`; repeat")
	cwd := fs.String("cwd", "", "working directory relative to the input root")
	download := fs.String("download", ".", "local `DIR` the outputs are written under")
	timeout := fs.Duration("timeout", 0, "action timeout (0: the server's default)")
	nodeProperties := fs.String("node-properties", "unix_mode,mtime", "comma-separated output node properties to ask for (unix_mode, mtime); the outputs are written with them")
	skipCache := fs.Bool("skip-cache", false, "run even if the Action Cache has a result")
	doNotCache := fs.Bool("do-not-cache", false, "do not store the result in the Action Cache")
	jsonOutput := fs.Bool("json", false, "print the ActionResult as JSON on stdout instead of the action's output")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	preserveMtimes := fs.Bool("preserve-mtimes", false, "send input files' modification times (mtime node property), for tasks whose make must see an earlier task's timestamps")
	preserveModes := fs.Bool("preserve-modes", true, "send input files' permission bits (unix_mode node property)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	argv := fs.Args()
	if len(argv) == 0 {
		usageError("submit", "missing the command to run: submit [flags] -- CMD [ARGS...]")
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "bitzel-worker submit: "+format+"\n", a...)
		return 125
	}
	progress := newProgressPrinter(*quiet)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	function := digest.MustNewFunction(*instance, remoteexecution.DigestFunction_SHA256)
	builder := client.NewTreeBuilder(function)
	builder.PreserveMtimes = *preserveMtimes
	builder.PreserveModes = *preserveModes
	root, err := buildInputRoot(builder, inputs, layers)
	if err != nil {
		return fail("%v", err)
	}
	command := &remoteexecution.Command{
		Arguments:        argv,
		WorkingDirectory: *cwd,
		OutputPaths:      append([]string{}, outputs...),
	}
	sort.Strings(command.OutputPaths)
	for _, p := range strings.Split(*nodeProperties, ",") {
		if p = strings.TrimSpace(p); p != "" {
			command.OutputNodeProperties = append(command.OutputNodeProperties, p)
		}
	}
	variables, err := keyValues(env, "--env")
	if err != nil {
		return fail("%v", err)
	}
	command.EnvironmentVariables = client.Environment(variables, *defaultPATH)
	properties, err := keyValues(platform, "--platform")
	if err != nil {
		return fail("%v", err)
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
		return fail("%v", err)
	}
	action := &remoteexecution.Action{CommandDigest: commandDigest.GetProto(), InputRootDigest: root.GetProto(), DoNotCache: *doNotCache, Platform: platformMessage}
	if *timeout > 0 {
		action.Timeout = durationpb.New(*timeout)
	}
	actionDigest, actionData, err := client.Encode(function, action)
	if err != nil {
		return fail("%v", err)
	}

	conn, err := dial(*remote)
	if err != nil {
		return fail("%v", err)
	}
	defer conn.Close()
	r := client.NewRemote(conn, *instance, function)
	directories, files := builder.Blobs()
	messages := map[digest.Digest][]byte{commandDigest: commandData, actionDigest: actionData}
	for d, data := range directories {
		messages[d] = data
	}
	if err := r.Upload(ctx, messages, files, progress); err != nil {
		return fail("upload: %v", err)
	}
	var response *remoteexecution.ExecuteResponse
	if *jsonOutput {
		response, err = r.Execute(ctx, actionDigest, *skipCache, progress)
	} else {
		// A long task's output as it is written, when the server
		// names its live logs (serve does; Buildbarn does not, and
		// then it comes with the result).
		response, err = r.ExecuteShowingLogs(ctx, actionDigest, *skipCache, progress, os.Stdout, os.Stderr)
	}
	if err != nil {
		return fail("%v", err)
	}
	result := response.Result
	st := status.FromProto(response.Status)
	if result != nil {
		if err := r.Download(ctx, result, *download, progress); err != nil {
			return fail("download outputs: %v", err)
		}
	}
	progress.done(response)
	if *jsonOutput {
		data, err := protojson.MarshalOptions{Multiline: true}.Marshal(result)
		if err != nil {
			return fail("%v", err)
		}
		fmt.Println(string(data))
	}
	switch st.Code() {
	case codes.OK:
		return int(result.GetExitCode())
	case codes.DeadlineExceeded:
		fmt.Fprintf(os.Stderr, "bitzel-worker submit: %s\n", st.Message())
		return 124
	default:
		return fail("the action could not be run: %v: %s", st.Code(), st.Message())
	}
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
