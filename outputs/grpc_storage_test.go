package outputs

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/buildbarn/bb-storage/pkg/blobstore/grpcservers"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// countingCASServer counts batch calls, to show small blobs travel in
// batches.
type countingCASServer struct {
	remoteexecution.ContentAddressableStorageServer
	batchReads, batchUpdates atomic.Int64
}

func (s *countingCASServer) BatchReadBlobs(ctx context.Context, r *remoteexecution.BatchReadBlobsRequest) (*remoteexecution.BatchReadBlobsResponse, error) {
	s.batchReads.Add(1)
	return s.ContentAddressableStorageServer.BatchReadBlobs(ctx, r)
}

func (s *countingCASServer) BatchUpdateBlobs(ctx context.Context, r *remoteexecution.BatchUpdateBlobsRequest) (*remoteexecution.BatchUpdateBlobsResponse, error) {
	s.batchUpdates.Add(1)
	return s.ContentAddressableStorageServer.BatchUpdateBlobs(ctx, r)
}

// TestGRPCStorage runs materialisation and capture against a bb-storage
// CAS served over gRPC, as a remote bb_storage would be.
func TestGRPCStorage(t *testing.T) {
	server := newTestEnv(t, layers.MaterializerOptions{}) // its storage is the remote side
	cas := &countingCASServer{ContentAddressableStorageServer: grpcservers.NewContentAddressableStorageServer(server.storage.ContentAddressableStorage, 16<<20)}
	s := grpc.NewServer()
	remoteexecution.RegisterContentAddressableStorageServer(s, cas)
	remoteexecution.RegisterActionCacheServer(s, grpcservers.NewActionCacheServer(server.storage.ActionCache, 16<<20))
	bytestream.RegisterByteStreamServer(s, grpcservers.NewByteStreamServer(server.storage.ContentAddressableStorage, 64<<10, nil))
	listener := bufconn.Listen(1 << 20)
	go s.Serve(listener)
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return listener.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	t.Cleanup(func() { conn.Close() })

	storage, err := storage.NewGRPCStorage(conn, conn, 0)
	must(t, err)
	work := tempDir(t)
	fc, err := layers.NewFileCache(filepath.Join(work, "files"), 1<<30, 1<<20, nil)
	must(t, err)
	lc, err := layers.NewLayerCache(filepath.Join(work, "layers"), 1<<30, 1<<20)
	must(t, err)
	m := layers.NewMaterializer(storage, fc, lc, layers.MaterializerOptions{})

	tree := dir2(50)
	large := make([]byte, 3<<20) // above the batch size: streamed
	for i := range large {
		large[i] = byte(i * 7)
	}
	tree["large.bin"] = file(large)
	root := server.putTree(tree)
	r, err := m.Materialize(context.Background(), digest.EmptyInstanceName, root)
	must(t, err)
	defer r.Release()
	got, err := os.ReadFile(filepath.Join(r.Mounts[0].Layers[0], "large.bin"))
	must(t, err)
	if !reflect.DeepEqual(got, large) {
		t.Fatal("large file corrupted")
	}
	if n := len(readTree(t, r.Mounts[0].Layers[0])); n != 52 {
		t.Fatalf("layer has %d entries", n)
	}
	if n := cas.batchReads.Load(); n == 0 || n > 5 {
		t.Fatalf("%d BatchReadBlobs calls for 50 small files and a directory", n)
	}

	// Missing blobs over gRPC are all reported too.
	absent := server.putDirectory(server.directoryOf(dir{"a": file("nowhere 1"), "b": file("nowhere 2")}, false))
	_, err = m.Materialize(context.Background(), digest.EmptyInstanceName, absent)
	if got := missingSubjects(t, err); len(got) != 2 {
		t.Fatalf("missing %q", got)
	}

	// Outputs: small ones in a batch, the large one streamed.
	upper := filepath.Join(work, "upper")
	must(t, os.MkdirAll(filepath.Join(upper, "out"), 0o755))
	for _, name := range []string{"a", "b", "c"} {
		must(t, os.WriteFile(filepath.Join(upper, "out", name), []byte("output "+name), 0o644))
	}
	large[0]++
	must(t, os.WriteFile(filepath.Join(upper, "out", "big"), large, 0o644))
	oc := NewOutputCapturer(storage, OutputCapturerOptions{})
	res, err := oc.Capture(context.Background(), digest.EmptyInstanceName, r, []string{upper}, &remoteexecution.Command{OutputPaths: []string{"out"}})
	must(t, err)
	if cas.batchUpdates.Load() != 1 {
		t.Fatalf("%d BatchUpdateBlobs calls", cas.batchUpdates.Load())
	}
	for _, content := range [][]byte{[]byte("output a"), []byte("output c"), large} {
		if _, err := server.storage.ContentAddressableStorage.Get(context.Background(), digestOf(content)).ToByteSlice(4 << 20); err != nil {
			t.Fatalf("output not stored remotely: %v", err)
		}
	}
	td, err := sha256Function.NewDigestFromProto(res.OutputDirectories[0].TreeDigest)
	must(t, err)
	if _, err := server.storage.ContentAddressableStorage.Get(context.Background(), td).ToByteSlice(1 << 20); err != nil {
		t.Fatalf("tree not stored remotely: %v", err)
	}
}

func dir2(n int) dir {
	d := dir{}
	for i := 0; i < n; i++ {
		d["f"+string(rune('A'+i))] = file("small file " + string(rune('A'+i)))
	}
	return d
}
