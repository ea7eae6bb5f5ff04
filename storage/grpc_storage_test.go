package storage

import (
	"bytes"
	"context"
	"net"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/buildbarn/bb-storage/pkg/blobstore/buffer"
	"github.com/buildbarn/bb-storage/pkg/blobstore/grpcservers"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// batchCounter counts the batch calls a CAS server gets, and can
// answer BatchReadBlobs with a digest nobody asked for.
type batchCounter struct {
	remoteexecution.ContentAddressableStorageServer
	reads, updates atomic.Int64
	unrequested    *remoteexecution.Digest
}

func (s *batchCounter) BatchReadBlobs(ctx context.Context, r *remoteexecution.BatchReadBlobsRequest) (*remoteexecution.BatchReadBlobsResponse, error) {
	s.reads.Add(1)
	response, err := s.ContentAddressableStorageServer.BatchReadBlobs(ctx, r)
	if err == nil && s.unrequested != nil {
		response.Responses = append(response.Responses, &remoteexecution.BatchReadBlobsResponse_Response{Digest: s.unrequested})
	}
	return response, err
}

func (s *batchCounter) BatchUpdateBlobs(ctx context.Context, r *remoteexecution.BatchUpdateBlobsRequest) (*remoteexecution.BatchUpdateBlobsResponse, error) {
	s.updates.Add(1)
	return s.ContentAddressableStorageServer.BatchUpdateBlobs(ctx, r)
}

// newRemote serves a local storage over gRPC (as bb_storage would) and
// returns it with a gRPC storage talking to it.
func newRemote(t *testing.T) (server *Storage, counter *batchCounter, client *Storage) {
	t.Helper()
	server = newTestStorage(t)
	counter = &batchCounter{ContentAddressableStorageServer: grpcservers.NewContentAddressableStorageServer(server.ContentAddressableStorage, 16<<20)}
	s := grpc.NewServer()
	remoteexecution.RegisterContentAddressableStorageServer(s, counter)
	remoteexecution.RegisterActionCacheServer(s, grpcservers.NewActionCacheServer(server.ActionCache, 16<<20))
	bytestream.RegisterByteStreamServer(s, grpcservers.NewByteStreamServer(server.ContentAddressableStorage, 64<<10, nil))
	listener := bufconn.Listen(1 << 20)
	go s.Serve(listener)
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return listener.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client, err = NewGRPCStorage(conn, conn, 0)
	if err != nil {
		t.Fatal(err)
	}
	return server, counter, client
}

func put(t *testing.T, s *Storage, data []byte) digest.Digest {
	t.Helper()
	d := digestOf(data)
	if err := s.PutBlob(context.Background(), d, buffer.NewValidatedBufferFromByteSlice(data)); err != nil {
		t.Fatal(err)
	}
	return d
}

func sortedDigests(ds []digest.Digest) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	sort.Strings(out)
	return out
}

// Small blobs travel in batches both ways; large ones are streamed;
// blobs the server lacks are returned, not errors; the empty blob is
// always there.
func TestGRPCStorageBatchesSmallBlobs(t *testing.T) {
	server, counter, client := newRemote(t)
	if !client.Batched() || server.Batched() {
		t.Fatal("only remote storage batches")
	}
	small := map[digest.Digest][]byte{}
	for _, s := range []string{"a", "bb", "ccc"} {
		small[digestOf([]byte(s))] = []byte(s)
	}
	if err := client.WriteSmallBlobs(context.Background(), small); err != nil {
		t.Fatal(err)
	}
	if n := counter.updates.Load(); n != 1 {
		t.Fatalf("%d BatchUpdateBlobs calls for 3 small blobs", n)
	}
	large := bytes.Repeat([]byte("large"), 250_000) // above SmallBlobSizeBytes, within a block
	if int64(len(large)) <= client.SmallBlobSizeBytes() {
		t.Fatal("the large blob is not large")
	}
	largeDigest := put(t, server, large)
	absent := digestOf([]byte("absent"))
	empty := digestOf(nil)

	var mu sync.Mutex
	got := map[digest.Digest][]byte{}
	want := []digest.Digest{largeDigest, absent, empty}
	for d := range small {
		want = append(want, d)
	}
	missing, err := client.FetchBlobs(context.Background(), want, 4, len(large), func(d digest.Digest, data []byte) error {
		mu.Lock()
		defer mu.Unlock()
		got[d] = data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sortedDigests(missing), sortedDigests([]digest.Digest{absent})) {
		t.Fatalf("missing %v, want only %v", missing, absent)
	}
	for d, data := range small {
		if !bytes.Equal(got[d], data) {
			t.Errorf("%v: got %q", d, got[d])
		}
	}
	if !bytes.Equal(got[largeDigest], large) {
		t.Error("large blob corrupted")
	}
	if data, ok := got[empty]; !ok || len(data) != 0 {
		t.Error("the empty blob was not there")
	}
	if n := counter.reads.Load(); n != 1 {
		t.Errorf("%d BatchReadBlobs calls for 3 small blobs and an absent one", n)
	}

	var streamed bytes.Buffer
	if err := client.ReadBlobInto(context.Background(), largeDigest, &streamed); err != nil || !bytes.Equal(streamed.Bytes(), large) {
		t.Errorf("ReadBlobInto: %v", err)
	}
	if err := client.ReadBlobInto(context.Background(), absent, &streamed); status.Code(err) != codes.NotFound {
		t.Errorf("ReadBlobInto of an absent blob: %v, want NOT_FOUND", err)
	}

	// A server that answers what was not asked is not trusted.
	counter.unrequested = absent.GetProto()
	_, err = client.ReadSmallBlobs(context.Background(), []digest.Digest{digestOf([]byte("a"))}, func(digest.Digest, []byte) error { return nil })
	if status.Code(err) != codes.Internal {
		t.Errorf("unrequested digest: %v, want INTERNAL", err)
	}
}

// Local storage reads blobs one by one, grouped only to amortise
// goroutines; a callback's error stops the read.
func TestLocalStorageReadsSmallBlobsDirectly(t *testing.T) {
	s := newTestStorage(t)
	blobs := map[digest.Digest][]byte{}
	var all []digest.Digest
	for i := 0; i < 100; i++ {
		data := []byte{byte(i), byte(i >> 8), 'x'}
		d := digestOf(data)
		blobs[d] = data
		all = append(all, d)
	}
	if err := s.WriteSmallBlobs(context.Background(), blobs); err != nil {
		t.Fatal(err)
	}
	batches, large := s.PartitionBySize(all)
	if len(large) != 0 || len(batches) != 2 || len(batches[0]) != 64 {
		t.Fatalf("%d batches (first of %d), %d large; want groups of 64", len(batches), len(batches[0]), len(large))
	}
	// The callback runs in FetchBlobs' parallel readers.
	var n atomic.Int64
	missing, err := s.FetchBlobs(context.Background(), all, 2, 16, func(d digest.Digest, data []byte) error {
		if !bytes.Equal(data, blobs[d]) {
			t.Errorf("%v: got %q", d, data)
		}
		n.Add(1)
		return nil
	})
	if err != nil || len(missing) != 0 || n.Load() != 100 {
		t.Fatalf("%d read, missing %v, %v", n.Load(), missing, err)
	}
	stop := status.Error(codes.Canceled, "enough")
	if _, err := s.ReadSmallBlobs(context.Background(), all, func(digest.Digest, []byte) error { return stop }); err != stop {
		t.Fatalf("got %v, want the callback's error", err)
	}
}

func TestNewGRPCStorageWithoutConnection(t *testing.T) {
	if _, err := NewGRPCStorage(nil, nil, 0); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("got %v, want INVALID_ARGUMENT", err)
	}
}

func TestMissingBlobsErrorListsEachBlobOnce(t *testing.T) {
	a, b := digestOf([]byte("a")), digestOf([]byte("b"))
	err := MissingBlobsError([]digest.Digest{b, a, b})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v", err)
	}
	var subjects []string
	for _, detail := range status.Convert(err).Details() {
		for _, v := range detail.(*errdetails.PreconditionFailure).Violations {
			if v.Type != "MISSING" {
				t.Errorf("violation type %q", v.Type)
			}
			subjects = append(subjects, v.Subject)
		}
	}
	want := []string{"blobs/" + a.GetHashString() + "/1", "blobs/" + b.GetHashString() + "/1"}
	sort.Strings(want)
	if !reflect.DeepEqual(subjects, want) {
		t.Fatalf("subjects %q, want %q", subjects, want)
	}
}
