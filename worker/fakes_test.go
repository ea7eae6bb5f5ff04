package worker

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/outputs"
	"github.com/bitzel/bitzel-worker/sandbox"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/protobuf/proto"
)

// Small fakes of the interfaces the local executor is built from, in
// the manner of Buildbarn's BuildExecutor tests: each records what it
// was asked and answers what the test tells it to, so that a test of
// the executor needs neither namespaces nor root.

var testFunction = digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256)

// newTestStorage is a local CAS and AC in a temporary directory.
func newTestStorage(t *testing.T) *storage.Storage {
	t.Helper()
	storage, err := storage.NewLocalStorage(t.TempDir(), 64<<20, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { storage.Close() })
	return storage
}

func digestOfBytes(data []byte) digest.Digest {
	g := testFunction.NewGenerator(int64(len(data)))
	g.Write(data)
	return g.Sum()
}

// putMessage stores m in the CAS and returns its digest.
func putMessage(t *testing.T, storage *storage.Storage, m proto.Message) digest.Digest {
	t.Helper()
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d := digestOfBytes(data)
	if err := storage.ContentAddressableStorage.Put(context.Background(), d, buffer.NewValidatedBufferFromByteSlice(data)); err != nil {
		t.Fatal(err)
	}
	return d
}

// readBlob returns a blob of the CAS.
func readBlob(t *testing.T, storage *storage.Storage, d *remoteexecution.Digest) []byte {
	t.Helper()
	parsed, err := testFunction.NewDigestFromProto(d)
	if err != nil {
		t.Fatalf("digest %v: %v", d, err)
	}
	data, err := storage.ContentAddressableStorage.Get(context.Background(), parsed).ToByteSlice(64 << 20)
	if err != nil {
		t.Fatalf("blob %v: %v", d, err)
	}
	return data
}

// fakeMaterializer hands out an InputRoot whose only mount is one
// layer directory, after failing with errs in turn.
type fakeMaterializer struct {
	layer string
	// extraLayers are put below layer in the root mount.
	extraLayers []string

	mu    sync.Mutex
	calls int
	roots []digest.Digest
	errs  []error
}

func (m *fakeMaterializer) Materialize(ctx context.Context, instanceName digest.InstanceName, root digest.Digest) (*layers.InputRoot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.roots = append(m.roots, root)
	if len(m.errs) > 0 {
		err := m.errs[0]
		m.errs = m.errs[1:]
		return nil, err
	}
	return &layers.InputRoot{Root: root, Mounts: []layers.Mount{{Path: "", Layers: append([]string{m.layer}, m.extraLayers...)}}}, nil
}

func (m *fakeMaterializer) callCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// fakeOutputs stores logs in the CAS through the real uploads of
// outputs.NewOutputCapturer, and answers Capture with captureResult (or
// the errors in captureErrs first), recording what it was given.
type fakeOutputs struct {
	base outputs.OutputCapturer

	mu            sync.Mutex
	captures      int
	captureUppers [][]string
	captureErrs   []error
	captureResult *remoteexecution.ActionResult
	// captureHook sees the upper directories as Capture does.
	captureHook func(uppers []string)
	uploadErrs  []error
	blobUploads int
	fileUploads []string
}

func newFakeOutputs(storage *storage.Storage) *fakeOutputs {
	return &fakeOutputs{base: outputs.NewOutputCapturer(storage, outputs.OutputCapturerOptions{}), captureResult: &remoteexecution.ActionResult{}}
}

func (o *fakeOutputs) Capture(ctx context.Context, instanceName digest.InstanceName, root *layers.InputRoot, uppers []string, command *remoteexecution.Command) (*remoteexecution.ActionResult, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.captures++
	o.captureUppers = append(o.captureUppers, append([]string{}, uppers...))
	if o.captureHook != nil {
		o.captureHook(uppers)
	}
	if len(o.captureErrs) > 0 {
		err := o.captureErrs[0]
		o.captureErrs = o.captureErrs[1:]
		return nil, err
	}
	return proto.Clone(o.captureResult).(*remoteexecution.ActionResult), nil
}

func (o *fakeOutputs) uploadErr() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.uploadErrs) == 0 {
		return nil
	}
	err := o.uploadErrs[0]
	o.uploadErrs = o.uploadErrs[1:]
	return err
}

func (o *fakeOutputs) UploadFile(ctx context.Context, instanceName digest.InstanceName, function digest.Function, path string) (digest.Digest, error) {
	if err := o.uploadErr(); err != nil {
		return digest.BadDigest, err
	}
	o.mu.Lock()
	o.fileUploads = append(o.fileUploads, path)
	o.mu.Unlock()
	return o.base.UploadFile(ctx, instanceName, function, path)
}

func (o *fakeOutputs) UploadBlob(ctx context.Context, instanceName digest.InstanceName, function digest.Function, data []byte) (digest.Digest, error) {
	if err := o.uploadErr(); err != nil {
		return digest.BadDigest, err
	}
	o.mu.Lock()
	o.blobUploads++
	o.mu.Unlock()
	return o.base.UploadBlob(ctx, instanceName, function, data)
}

// fakeRunner runs run (by default: exit 0, nothing written) in place
// of a sandbox and records every Spec.
type fakeRunner struct {
	run func(ctx context.Context, spec *sandbox.Spec) (*sandbox.Result, error)

	mu    sync.Mutex
	specs []*sandbox.Spec
}

func (r *fakeRunner) Run(ctx context.Context, spec *sandbox.Spec) (*sandbox.Result, error) {
	r.mu.Lock()
	r.specs = append(r.specs, spec)
	r.mu.Unlock()
	if r.run == nil {
		return &sandbox.Result{WallTime: time.Millisecond}, nil
	}
	return r.run(ctx, spec)
}

func (r *fakeRunner) Close() error { return nil }

func (r *fakeRunner) runs() []*sandbox.Spec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*sandbox.Spec{}, r.specs...)
}

// writeLogs is a runner body that prints as an action would.
func writeLogs(stdout, stderr string, result sandbox.Result) func(context.Context, *sandbox.Spec) (*sandbox.Result, error) {
	return func(ctx context.Context, spec *sandbox.Spec) (*sandbox.Result, error) {
		io.WriteString(spec.Stdout, stdout)
		io.WriteString(spec.Stderr, stderr)
		r := result
		return &r, nil
	}
}

// executorFixture is a local executor over fakes, with an Action and
// Command stored in a real local CAS.
type executorFixture struct {
	t            *testing.T
	storage      *storage.Storage
	materializer *fakeMaterializer
	outputs      *fakeOutputs
	runner       *fakeRunner
	buildDir     string
	options      LocalExecutorOptions
}

func newExecutorFixture(t *testing.T) *executorFixture {
	t.Helper()
	storage := newTestStorage(t)
	layer := t.TempDir()
	f := &executorFixture{
		t:            t,
		storage:      storage,
		materializer: &fakeMaterializer{layer: layer},
		outputs:      newFakeOutputs(storage),
		runner:       &fakeRunner{},
		buildDir:     filepath.Join(t.TempDir(), "build"),
	}
	f.options = LocalExecutorOptions{
		Storage:        storage,
		Materializer:   f.materializer,
		Outputs:        f.outputs,
		Runner:         f.runner,
		BuildDirectory: f.buildDir,
		WorkerName:     "test-worker",
		DefaultTimeout: time.Minute,
		MaximumTimeout: time.Hour,
	}
	return f
}

func (f *executorFixture) executor() Executor {
	f.t.Helper()
	e, err := NewLocalExecutor(f.options)
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

// request stores command and action (with the command's digest and an
// empty input root) and names the action.
func (f *executorFixture) request(action *remoteexecution.Action, command *remoteexecution.Command) *Request {
	f.t.Helper()
	action = proto.Clone(action).(*remoteexecution.Action)
	action.CommandDigest = putMessage(f.t, f.storage, command).GetProto()
	if action.InputRootDigest == nil {
		action.InputRootDigest = putMessage(f.t, f.storage, &remoteexecution.Directory{}).GetProto()
	}
	return &Request{
		InstanceName:   digest.EmptyInstanceName,
		DigestFunction: testFunction,
		ActionDigest:   putMessage(f.t, f.storage, action),
	}
}

// stageRecorder is an Observer that keeps the stages it saw.
type stageRecorder struct {
	mu     sync.Mutex
	stages []Stage
}

func (s *stageRecorder) observe(stage Stage) {
	s.mu.Lock()
	s.stages = append(s.stages, stage)
	s.mu.Unlock()
}

func (s *stageRecorder) seen() []Stage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Stage{}, s.stages...)
}

// entries lists a directory, for checks that nothing was left behind.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	list, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range list {
		names = append(names, e.Name())
	}
	return names
}
