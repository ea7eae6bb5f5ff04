package main

import (
	"context"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/client"
	"github.com/bitzel/bitzel-worker/layerproperty"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// endpoint is a REAPI endpoint driven as Bazel drives one: blobs are
// uploaded with FindMissingBlobs + BatchUpdateBlobs (ByteStream for
// large ones), then Execute is called and its stream read to the end.
type endpoint struct {
	conn     *grpc.ClientConn
	remote   *client.Remote
	function digest.Function
}

func dial(address string) (*endpoint, error) {
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		return nil, err
	}
	function := digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)
	return &endpoint{conn: conn, remote: client.NewRemote(conn, "", function), function: function}, nil
}

type quietProgress struct{}

func (quietProgress) Uploading(int, int, int64, int64)           {}
func (quietProgress) Stage(remoteexecution.ExecutionStage_Value) {}
func (quietProgress) Downloading(int, int)                       {}

// blobs is a set of blobs built in memory, to be uploaded at once.
type blobs map[digest.Digest][]byte

func (b blobs) add(function digest.Function, data []byte) digest.Digest {
	g := function.NewGenerator(int64(len(data)))
	g.Write(data)
	d := g.Sum()
	b[d] = data
	return d
}

func (b blobs) addProto(function digest.Function, m proto.Message) digest.Digest {
	d, data, err := client.Encode(function, m)
	if err != nil {
		// Only a message the harness built itself gets here.
		panic(err)
	}
	b[d] = data
	return d
}

func (b blobs) bytes() int64 {
	var n int64
	for _, data := range b {
		n += int64(len(data))
	}
	return n
}

func (e *endpoint) upload(ctx context.Context, b blobs) error {
	return e.remote.Upload(ctx, b, nil, quietProgress{})
}

// command describes an action; every action gets a nonce in its
// environment so that none is an Action Cache hit or merged with
// another in flight.
type command struct {
	args    []string
	env     map[string]string
	input   digest.Digest
	outputs []string
	timeout time.Duration
	// platform routes the action in a Buildbarn cluster (the
	// scheduler's queue is Action.platform); nil for serve.
	platform *remoteexecution.Platform
}

var nonce = fmt.Sprint(time.Now().UnixNano())

func (e *endpoint) action(b blobs, c command, seq int) digest.Digest {
	cmd := &remoteexecution.Command{
		Arguments:         c.args,
		OutputPaths:       c.outputs,
		OutputDirectories: c.outputs,
		Platform:          c.platform,
	}
	env := map[string]string{"BENCH_NONCE": fmt.Sprintf("%s-%d", nonce, seq), "PATH": "/usr/bin:/bin"}
	for k, v := range c.env {
		env[k] = v
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.EnvironmentVariables = append(cmd.EnvironmentVariables, &remoteexecution.Command_EnvironmentVariable{Name: k, Value: env[k]})
	}
	input := c.input
	if input == (digest.Digest{}) {
		input = b.addProto(e.function, &remoteexecution.Directory{})
	}
	a := &remoteexecution.Action{CommandDigest: b.addProto(e.function, cmd).GetProto(), InputRootDigest: input.GetProto(), Platform: c.platform}
	if c.timeout > 0 {
		a.Timeout = durationpb.New(c.timeout)
	}
	return b.addProto(e.function, a)
}

// stages are the worker's own timings, from ExecutedActionMetadata.
type stages struct {
	fetch, run, upload, worker time.Duration
}

// setup is what the worker spends before the command has finished:
// fetching and placing inputs, starting the sandbox with its mounts,
// and the command (here /bin/true, about a millisecond).
func (s stages) setup() time.Duration { return s.fetch + s.run }

func stagesOf(m *remoteexecution.ExecutedActionMetadata) stages {
	d := func(a, b interface{ AsTime() time.Time }) time.Duration { return b.AsTime().Sub(a.AsTime()) }
	return stages{
		fetch:  d(m.GetInputFetchStartTimestamp(), m.GetInputFetchCompletedTimestamp()),
		run:    d(m.GetExecutionStartTimestamp(), m.GetExecutionCompletedTimestamp()),
		upload: d(m.GetOutputUploadStartTimestamp(), m.GetOutputUploadCompletedTimestamp()),
		worker: d(m.GetWorkerStartTimestamp(), m.GetWorkerCompletedTimestamp()),
	}
}

// execute runs an uploaded action and fails unless it ran and exited 0.
func (e *endpoint) execute(ctx context.Context, action digest.Digest) (*remoteexecution.ActionResult, error) {
	response, err := e.remote.Execute(ctx, action, true, quietProgress{})
	if err != nil {
		return nil, err
	}
	if response.Status.GetCode() != 0 {
		return nil, fmt.Errorf("action %s: %s", action, response.Status.GetMessage())
	}
	if response.CachedResult {
		return nil, fmt.Errorf("action %s: unexpected cache hit", action)
	}
	if response.Result.GetExitCode() != 0 {
		stderr, _ := e.remote.Read(ctx, mustDigest(e.function, response.Result.GetStderrDigest()))
		return nil, fmt.Errorf("action %s: exit code %d: %s", action, response.Result.GetExitCode(), stderr)
	}
	return response.Result, nil
}

func mustDigest(f digest.Function, d *remoteexecution.Digest) digest.Digest {
	if d == nil {
		return f.NewGenerator(0).Sum()
	}
	r, err := f.NewDigestFromProto(d)
	if err != nil {
		panic(err)
	}
	return r
}

// treeSpec is a generated input tree: files in directories of perDir,
// each of size bytes of pseudo-random content drawn from seed, so that
// two seeds share no file. Paths are prefix/dNNNN/fNNNNN.
type treeSpec struct {
	files, perDir, size int
	prefix              []string
}

// build adds the tree's blobs and returns its root digest; when
// diskRoot is not empty the same files are written below it, for the
// baselines.
func (e *endpoint) build(b blobs, t treeSpec, seed int64, diskRoot string) (digest.Digest, error) {
	rng := rand.New(rand.NewSource(seed))
	var dirs []*remoteexecution.DirectoryNode
	n := 0
	for d := 0; n < t.files; d++ {
		dname := fmt.Sprintf("d%04d", d)
		dpath := filepath.Join(append(append([]string{diskRoot}, t.prefix...), dname)...)
		if diskRoot != "" {
			if err := os.MkdirAll(dpath, 0o755); err != nil {
				return digest.BadDigest, err
			}
		}
		sub := &remoteexecution.Directory{}
		for f := 0; f < t.perDir && n < t.files; f++ {
			data := make([]byte, t.size)
			rng.Read(data)
			name := fmt.Sprintf("f%05d", n)
			sub.Files = append(sub.Files, &remoteexecution.FileNode{Name: name, Digest: b.add(e.function, data).GetProto()})
			if diskRoot != "" {
				if err := os.WriteFile(filepath.Join(dpath, name), data, 0o644); err != nil {
					return digest.BadDigest, err
				}
			}
			n++
		}
		dirs = append(dirs, &remoteexecution.DirectoryNode{Name: dname, Digest: b.addProto(e.function, sub).GetProto()})
	}
	root := b.addProto(e.function, &remoteexecution.Directory{Directories: dirs})
	return e.wrap(b, root, t.prefix), nil
}

// wrap places tree at the path given by components (outermost first).
func (e *endpoint) wrap(b blobs, tree digest.Digest, components []string) digest.Digest {
	for i := len(components) - 1; i >= 0; i-- {
		tree = b.addProto(e.function, &remoteexecution.Directory{Directories: []*remoteexecution.DirectoryNode{{Name: components[i], Digest: tree.GetProto()}}})
	}
	return tree
}

// union returns a Directory with no entries of its own that is the
// union (bitzel.layers) of layers, topmost first.
func (e *endpoint) union(b blobs, layers []digest.Digest) digest.Digest {
	return b.addProto(e.function, &remoteexecution.Directory{NodeProperties: &remoteexecution.NodeProperties{
		Properties: []*remoteexecution.NodeProperty{{Name: layerproperty.Name, Value: layerproperty.Format(layers)}},
	}})
}

// root returns a Directory holding the given subdirectories.
func (e *endpoint) root(b blobs, children map[string]digest.Digest) digest.Digest {
	dir := &remoteexecution.Directory{}
	for _, name := range slices.Sorted(maps.Keys(children)) {
		dir.Directories = append(dir.Directories, &remoteexecution.DirectoryNode{Name: name, Digest: children[name].GetProto()})
	}
	return b.addProto(e.function, dir)
}

// dirWithFile returns a Directory holding one regular file.
func (e *endpoint) dirWithFile(b blobs, name string, file digest.Digest) digest.Digest {
	return b.addProto(e.function, &remoteexecution.Directory{Files: []*remoteexecution.FileNode{{Name: name, Digest: file.GetProto()}}})
}
