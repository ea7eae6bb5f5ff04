// Package e2e tests bitzel-worker end to end: the real binary, started
// as `serve`, driven by a REAPI client over gRPC.
package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	bzclient "github.com/bitzel/bitzel-worker/client"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/internal/procfs"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/genproto/googleapis/longrunning"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

var (
	binariesOnce sync.Once
	binDir       string
	binErr       error
	// builtBinDir is binDir when the tests built it: TestMain
	// removes it (59 MB per run otherwise).
	builtBinDir string
)

// binaries returns the directory holding bitzel-worker and
// bitzel-sandbox-init: BITZEL_BIN_DIR (the test script builds them) or
// a fresh build.
func binaries(t testing.TB) string {
	binariesOnce.Do(func() {
		if dir := os.Getenv("BITZEL_BIN_DIR"); dir != "" {
			binDir = dir
			return
		}
		dir, err := os.MkdirTemp("", "bitzel-e2e-bin-")
		if err != nil {
			binErr = err
			return
		}
		builtBinDir = dir
		os.Chmod(dir, 0o755)
		out, err := exec.Command("go", "build", "-o", dir+"/", "../cmd/bitzel-worker", "../cmd/bitzel-sandbox-init").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("build: %v\n%s", err, out)
		}
		binDir = dir
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

// server is a running `bitzel-worker serve`.
type server struct {
	t           testing.TB
	cmd         *exec.Cmd
	dataDir     string
	address     string
	metricsAddr string
	conn        *grpc.ClientConn
	logMu       sync.Mutex
	log         strings.Builder
	exited      chan struct{}
}

var (
	servingRE = regexp.MustCompile(`serving REAPI on (\S+)`)
	metricsRE = regexp.MustCompile(`metrics on (\S+)`)
)

// startServer starts serve on free ports with a fresh data directory.
func startServer(t testing.TB, extraArgs ...string) *server {
	t.Helper()
	dataDir, err := os.MkdirTemp("", "bitzel-e2e-data-")
	if err != nil {
		t.Fatal(err)
	}
	// A root worker's actions run as unprivileged ids that must reach
	// the caches.
	os.Chmod(dataDir, 0o755)
	s := startServerIn(t, dataDir, extraArgs...)
	t.Cleanup(func() {
		s.stop()
		fsutil.RemoveAll(dataDir)
	})
	return s
}

func startServerIn(t testing.TB, dataDir string, extraArgs ...string) *server {
	t.Helper()
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", dataDir,
		"--cas-size", "1073741824", "--concurrency", fmt.Sprint(runtime.NumCPU())}, extraArgs...)
	cmd := exec.Command(filepath.Join(binaries(t), "bitzel-worker"), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, dataDir: dataDir, exited: make(chan struct{})}
	// Stopped at the end of the test whatever the caller does (stop is
	// idempotent), and also when it fails to start: a server a test
	// forgot to stop outlived the whole run (TestMain checks).
	t.Cleanup(s.stop)
	ready := make(chan struct{})
	go func() {
		scanner := bufio.NewScanner(stderr)
		signalled := false
		for scanner.Scan() {
			line := scanner.Text()
			s.logMu.Lock()
			s.log.WriteString(line + "\n")
			if m := metricsRE.FindStringSubmatch(line); m != nil {
				s.metricsAddr = m[1]
			}
			if m := servingRE.FindStringSubmatch(line); m != nil && !signalled {
				s.address = m[1]
				signalled = true
				close(ready)
			}
			s.logMu.Unlock()
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
		close(s.exited)
	}()
	select {
	case <-ready:
	case <-s.exited:
		t.Fatalf("serve exited at start-up:\n%s", s.logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not start:\n%s", s.logs())
	}
	s.conn, err = grpc.NewClient(s.address, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *server) logs() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// serveConfigWithDiagnostics writes a serve configuration file with a
// Buildbarn diagnostics HTTP server on a free address (Prometheus on,
// no warm sandboxes), top and diagnostics inserted as further fields of
// the file and of the server, and returns its path and the address.
func serveConfigWithDiagnostics(t *testing.T, top, diagnostics string) (string, string) {
	t.Helper()
	address := freeAddress(t)
	config := fmt.Sprintf(`{%s
  executor: { sandbox: { warmSandboxes: 0 } },
  global: {
    diagnosticsHttpServer: {
      httpServers: [{ listenAddresses: ['%s'], authenticationPolicy: { allow: {} } }],
      enablePrometheus: true,%s
    },
  },
}
`, top, address, diagnostics)
	path := filepath.Join(t.TempDir(), "serve.jsonnet")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, address
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop() {
	if s.conn != nil {
		s.conn.Close()
	}
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		s.t.Errorf("serve did not stop on SIGINT:\n%s", s.logs())
	}
}

// client is the tests' REAPI client for one instance name: a thin
// helper over client.Remote (the one REAPI client: upload, execute,
// read) that fails the test on an error and speaks in the proto
// digests the tests write. The raw stubs are for tests of the protocol
// itself: malformed requests, Capabilities, the Action Cache.
type client struct {
	t        testing.TB
	conn     grpc.ClientConnInterface
	instance string
	// digestFunction is what uploads hash with and requests name;
	// unset is SHA-256.
	digestFunction remoteexecution.DigestFunction_Value
	cas            remoteexecution.ContentAddressableStorageClient
	ac             remoteexecution.ActionCacheClient
	exec           remoteexecution.ExecutionClient
	bs             bytestream.ByteStreamClient
	caps           remoteexecution.CapabilitiesClient
}

func newClient(t testing.TB, conn grpc.ClientConnInterface) *client {
	return &client{
		t:    t,
		conn: conn,
		cas:  remoteexecution.NewContentAddressableStorageClient(conn),
		ac:   remoteexecution.NewActionCacheClient(conn),
		exec: remoteexecution.NewExecutionClient(conn),
		bs:   bytestream.NewByteStreamClient(conn),
		caps: remoteexecution.NewCapabilitiesClient(conn),
	}
}

func (s *server) client() *client { return newClient(s.t, s.conn) }

// in is c failing t (a subtest) instead, in digest function fn.
func (c *client) in(t testing.TB, fn remoteexecution.DigestFunction_Value) *client {
	copied := *c
	copied.t, copied.digestFunction = t, fn
	return &copied
}

func (c *client) function() digest.Function {
	fn := c.digestFunction
	if fn == remoteexecution.DigestFunction_UNKNOWN {
		fn = remoteexecution.DigestFunction_SHA256
	}
	instance, err := digest.NewInstanceName(c.instance)
	if err != nil {
		c.t.Fatal(err)
	}
	function, err := instance.GetDigestFunction(fn, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	return function
}

// remote is the client.Remote for the instance name c has now (tests
// set it after creating c).
func (c *client) remote() *bzclient.Remote {
	return bzclient.NewRemote(c.conn, c.instance, c.function())
}

// digest converts a digest the tests hold to the Remote's kind.
func (c *client) digest(d *remoteexecution.Digest) digest.Digest {
	c.t.Helper()
	converted, err := c.function().NewDigestFromProto(d)
	if err != nil {
		c.t.Fatal(err)
	}
	return converted
}

// hash is data's digest in c's digest function.
func (c *client) hash(data []byte) *remoteexecution.Digest {
	generator := c.function().NewGenerator(int64(len(data)))
	generator.Write(data)
	return generator.Sum().GetProto()
}

func digestOf(data []byte) *remoteexecution.Digest {
	sum := sha256.Sum256(data)
	return &remoteexecution.Digest{Hash: hex.EncodeToString(sum[:]), SizeBytes: int64(len(data))}
}

func key(d *remoteexecution.Digest) string { return fmt.Sprintf("%s/%d", d.Hash, d.SizeBytes) }

// quiet is the Progress of a client nobody watches.
type quiet struct{}

func (quiet) Uploading(int, int, int64, int64)           {}
func (quiet) Stage(remoteexecution.ExecutionStage_Value) {}
func (quiet) Downloading(int, int)                       {}

// upload stores blobs and returns their digests.
func (c *client) upload(blobs ...[]byte) []*remoteexecution.Digest {
	c.t.Helper()
	digests := make([]*remoteexecution.Digest, len(blobs))
	messages := make(map[digest.Digest][]byte, len(blobs))
	for i, b := range blobs {
		digests[i] = c.hash(b)
		messages[c.digest(digests[i])] = b
	}
	if err := c.remote().Upload(context.Background(), messages, nil, quiet{}); err != nil {
		c.t.Fatal(err)
	}
	return digests
}

// encode is m as uploaded: deterministically marshalled.
func (c *client) encode(m proto.Message) []byte {
	c.t.Helper()
	_, data, err := bzclient.Encode(c.function(), m)
	if err != nil {
		c.t.Fatal(err)
	}
	return data
}

func (c *client) uploadProto(m proto.Message) *remoteexecution.Digest {
	c.t.Helper()
	return c.upload(c.encode(m))[0]
}

func (c *client) read(d *remoteexecution.Digest) []byte {
	c.t.Helper()
	if d == nil {
		return nil
	}
	data, err := c.remote().Read(context.Background(), c.digest(d))
	if err != nil {
		c.t.Fatal(err)
	}
	return data
}

// entry is a file or symlink of an input tree built with tree().
type entry struct {
	content    string
	executable bool
	symlink    string
}

// tree uploads an input tree given as path -> entry (a path ending in
// "/" is an empty directory) and returns the root Directory's digest.
func (c *client) tree(files map[string]entry) *remoteexecution.Digest {
	c.t.Helper()
	type dir struct {
		files    map[string]entry
		children map[string]*dir
	}
	newDir := func() *dir { return &dir{files: map[string]entry{}, children: map[string]*dir{}} }
	root := newDir()
	for p, e := range files {
		parts := strings.Split(strings.TrimSuffix(p, "/"), "/")
		d := root
		last := len(parts) - 1
		if strings.HasSuffix(p, "/") {
			last = len(parts)
		}
		for _, part := range parts[:last] {
			if d.children[part] == nil {
				d.children[part] = newDir()
			}
			d = d.children[part]
		}
		if !strings.HasSuffix(p, "/") {
			d.files[parts[last]] = e
		}
	}
	// Every blob of the tree, uploaded at once.
	var blobs [][]byte
	add := func(data []byte) *remoteexecution.Digest {
		blobs = append(blobs, data)
		return c.hash(data)
	}
	var build func(d *dir) *remoteexecution.Digest
	build = func(d *dir) *remoteexecution.Digest {
		msg := &remoteexecution.Directory{}
		for _, name := range sortedKeys(d.files) {
			e := d.files[name]
			if e.symlink != "" {
				msg.Symlinks = append(msg.Symlinks, &remoteexecution.SymlinkNode{Name: name, Target: e.symlink})
				continue
			}
			msg.Files = append(msg.Files, &remoteexecution.FileNode{Name: name, Digest: add([]byte(e.content)), IsExecutable: e.executable})
		}
		for _, name := range sortedKeys(d.children) {
			msg.Directories = append(msg.Directories, &remoteexecution.DirectoryNode{Name: name, Digest: build(d.children[name])})
		}
		return add(c.encode(msg))
	}
	rootDigest := build(root)
	c.upload(blobs...)
	return rootDigest
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// action describes an action for newAction.
type action struct {
	args        []string
	env         map[string]string
	workingDir  string
	outputFiles []string
	outputDirs  []string
	outputPaths []string
	nodeProps   []string
	dirFormat   remoteexecution.Command_OutputDirectoryFormat
	timeout     time.Duration
	doNotCache  bool
	platform    map[string]string
	input       *remoteexecution.Digest
}

func (c *client) newAction(a action) *remoteexecution.Digest {
	c.t.Helper()
	command := &remoteexecution.Command{
		Arguments:             a.args,
		WorkingDirectory:      a.workingDir,
		OutputFiles:           a.outputFiles,
		OutputDirectories:     a.outputDirs,
		OutputPaths:           a.outputPaths,
		OutputNodeProperties:  a.nodeProps,
		OutputDirectoryFormat: a.dirFormat,
	}
	for _, name := range sortedKeys(a.env) {
		command.EnvironmentVariables = append(command.EnvironmentVariables, &remoteexecution.Command_EnvironmentVariable{Name: name, Value: a.env[name]})
	}
	if a.input == nil {
		a.input = c.tree(map[string]entry{})
	}
	msg := &remoteexecution.Action{CommandDigest: c.uploadProto(command), InputRootDigest: a.input, DoNotCache: a.doNotCache}
	if a.timeout > 0 {
		msg.Timeout = durationpb.New(a.timeout)
	}
	if a.platform != nil {
		msg.Platform = &remoteexecution.Platform{}
		for _, name := range sortedKeys(a.platform) {
			msg.Platform.Properties = append(msg.Platform.Properties, &remoteexecution.Platform_Property{Name: name, Value: a.platform[name]})
		}
	}
	return c.uploadProto(msg)
}

// startExecute sends an Execute request and returns its stream, for a
// test that watches it (waitForExecuting, drain).
func (c *client) startExecute(ctx context.Context, actionDigest *remoteexecution.Digest, skipCache bool) remoteexecution.Execution_ExecuteClient {
	c.t.Helper()
	stream, err := c.remote().StartExecute(ctx, c.digest(actionDigest), skipCache)
	if err != nil {
		c.t.Fatal(err)
	}
	return stream
}

// execute runs an action to completion and returns the final
// operation's response and the operations seen on the stream.
func (c *client) execute(actionDigest *remoteexecution.Digest, skipCache bool) (*remoteexecution.ExecuteResponse, []*longrunning.Operation) {
	c.t.Helper()
	return c.drain(c.startExecute(context.Background(), actionDigest, skipCache))
}

// tryExecute runs an action to completion, for tests that count
// failures from many goroutines instead of failing at the first.
func (c *client) tryExecute(ctx context.Context, actionDigest *remoteexecution.Digest, skipCache bool) (*remoteexecution.ExecuteResponse, error) {
	d, err := c.function().NewDigestFromProto(actionDigest)
	if err != nil {
		return nil, err
	}
	return c.remote().Execute(ctx, d, skipCache, quiet{})
}

// drain reads an Execute or WaitExecution stream to the done
// operation and returns its response and every operation seen.
func (c *client) drain(stream bzclient.OperationStream) (*remoteexecution.ExecuteResponse, []*longrunning.Operation) {
	c.t.Helper()
	var ops []*longrunning.Operation
	response, err := bzclient.Follow(stream, func(op *longrunning.Operation) { ops = append(ops, op) })
	if err != nil {
		c.t.Fatalf("execute (%d updates): %v", len(ops), err)
	}
	return response, ops
}

// waitForExecuting reads stream until the action runs.
func waitForExecuting(t testing.TB, stream bzclient.OperationStream) {
	t.Helper()
	op, err := bzclient.Await(stream, func(op *longrunning.Operation) bool {
		return bzclient.Stage(op) == remoteexecution.ExecutionStage_EXECUTING
	})
	if err != nil {
		t.Fatal(err)
	}
	if op.Done {
		t.Fatalf("operation %s was done before it ran: %v", op.Name, op)
	}
}

// run executes an action and fails on a non-OK status.
func (c *client) run(a action) *remoteexecution.ActionResult {
	c.t.Helper()
	response, _ := c.execute(c.newAction(a), false)
	if st := status.FromProto(response.Status); st.Code() != 0 {
		c.t.Fatalf("action %v failed: %v", a.args, st.Err())
	}
	return response.Result
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

// startClientOn opens a second connection to a running server.
func startClientOn(t testing.TB, s *server) *client {
	t.Helper()
	conn, err := grpc.NewClient(s.address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return newClient(t, conn)
}

// sandboxProcesses lists a server's sandbox launcher and the sandbox
// PID 1s it started.
func sandboxProcesses(t testing.TB, server int) []int {
	t.Helper()
	launchers := procfs.Children(server, "bitzel-sandbox-launcher")
	found := append([]int{}, launchers...)
	for _, l := range launchers {
		found = append(found, procfs.Children(l, "bitzel-sandbox-init")...)
	}
	return found
}
