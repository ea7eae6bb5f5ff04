package livelogs

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/buildbarn/bb-storage/pkg/auth"
	auth_pb "github.com/buildbarn/bb-storage/pkg/proto/auth"
	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// memorySource is a log a test writes.
type memorySource struct {
	mu      sync.Mutex
	data    []byte
	done    bool
	changed chan struct{}
	// onSnapshot runs (on a goroutine of its own) after each
	// Snapshot, with what that Snapshot returned.
	onSnapshot func(size int64, done bool)
}

func newMemorySource() *memorySource { return &memorySource{changed: make(chan struct{})} }

func (m *memorySource) write(s string, done bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = append(m.data, s...)
	m.done = m.done || done
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *memorySource) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.data[off:]), nil
}

func (m *memorySource) Snapshot() (int64, bool, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.onSnapshot != nil {
		go m.onSnapshot(int64(len(m.data)), m.done)
	}
	return int64(len(m.data)), m.done, m.changed
}

// readStream collects what the server sends; onSend runs after each
// message (the test writes more there).
type readStream struct {
	grpc.ServerStream
	ctx    context.Context
	got    []string
	onSend func(n int)
}

func (s *readStream) Context() context.Context { return s.ctx }
func (s *readStream) Send(r *bytestream.ReadResponse) error {
	s.got = append(s.got, string(r.Data))
	if s.onSend != nil {
		s.onSend(len(s.got))
	}
	return nil
}

// passThrough records what the CAS's ByteStream server was asked.
type passThrough struct {
	bytestream.ByteStreamServer
	reads []string
}

func (p *passThrough) Read(r *bytestream.ReadRequest, _ bytestream.ByteStream_ReadServer) error {
	p.reads = append(p.reads, r.ResourceName)
	return nil
}

func asClient(t *testing.T, user string) context.Context {
	if user == "" {
		return context.Background()
	}
	public, err := structpb.NewValue(map[string]any{"user": user})
	if err != nil {
		t.Fatal(err)
	}
	metadata, err := auth.NewAuthenticationMetadataFromProto(&auth_pb.AuthenticationMetadata{Public: public})
	if err != nil {
		t.Fatal(err)
	}
	return auth.NewContextWithAuthenticationMetadata(context.Background(), metadata)
}

func TestLiveLogIsFollowedAsItGrowsUntilItsActionEnds(t *testing.T) {
	registry, base := NewRegistry(), &passThrough{}
	server := NewByteStreamServer(base, registry)
	source := newMemorySource()
	source.write("first line\n", false)
	name := Name("main", "7c1e", "stdout")
	if name != "main/live-logs/7c1e/stdout" {
		t.Fatalf("name %q", name)
	}
	registry.Add(name, ClientIdentity(asClient(t, "alice")), source)

	// The second line is written only after the server has seen
	// that it has sent all there is of a log still growing: it must
	// wait for it rather than end the stream.
	var once sync.Once
	var sentFirst atomic.Bool
	source.onSnapshot = func(size int64, done bool) {
		if sentFirst.Load() && !done {
			once.Do(func() { source.write("second line\n", true) })
		}
	}
	stream := &readStream{ctx: asClient(t, "alice"), onSend: func(int) { sentFirst.Store(true) }}
	if err := server.Read(&bytestream.ReadRequest{ResourceName: name}, stream); err != nil {
		t.Fatal(err)
	}
	if len(stream.got) != 2 || stream.got[0] != "first line\n" || stream.got[1] != "second line\n" {
		t.Fatalf("read %q", stream.got)
	}

	// read_offset and read_limit, as for blobs.
	stream = &readStream{ctx: asClient(t, "alice")}
	if err := server.Read(&bytestream.ReadRequest{ResourceName: name, ReadOffset: 6, ReadLimit: 4}, stream); err != nil || len(stream.got) != 1 || stream.got[0] != "line" {
		t.Fatalf("offset 6 limit 4: %q, %v", stream.got, err)
	}
	if err := server.Read(&bytestream.ReadRequest{ResourceName: name, ReadOffset: 100}, &readStream{ctx: asClient(t, "alice")}); status.Code(err) != codes.OutOfRange {
		t.Fatalf("offset past the end of a complete log: %v", err)
	}
	if err := server.Read(&bytestream.ReadRequest{ResourceName: name, ReadOffset: -1}, &readStream{ctx: asClient(t, "alice")}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("negative offset: %v", err)
	}
	if len(base.reads) != 0 {
		t.Fatalf("live log reads reached the CAS: %q", base.reads)
	}
}

func TestLiveLogIsTheStartingClientsOnly(t *testing.T) {
	registry := NewRegistry()
	server := NewByteStreamServer(&passThrough{}, registry)
	source := newMemorySource()
	source.write("secret", true)
	name := Name("", "id", "stderr")
	registry.Add(name, ClientIdentity(asClient(t, "alice")), source)
	err := server.Read(&bytestream.ReadRequest{ResourceName: name}, &readStream{ctx: asClient(t, "mallory")})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another client's read: %v, want PERMISSION_DENIED", err)
	}
	// Without authentication every client is the same (documented).
	unauthenticated := Name("", "id2", "stdout")
	registry.Add(unauthenticated, ClientIdentity(asClient(t, "")), source)
	if err := server.Read(&bytestream.ReadRequest{ResourceName: unauthenticated}, &readStream{ctx: asClient(t, "")}); err != nil {
		t.Fatalf("unauthenticated read: %v", err)
	}
}

func TestEndedLiveLogIsNotFoundAndOtherNamesPassThrough(t *testing.T) {
	registry, base := NewRegistry(), &passThrough{}
	server := NewByteStreamServer(base, registry)
	name := Name("main", "gone", "stdout")
	remove := registry.Add(name, "", newMemorySource())
	remove()
	err := server.Read(&bytestream.ReadRequest{ResourceName: name}, &readStream{ctx: context.Background()})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("ended live log: %v, want NOT_FOUND", err)
	}
	blob := "main/blobs/" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + "/5"
	if err := server.Read(&bytestream.ReadRequest{ResourceName: blob}, &readStream{ctx: context.Background()}); err != nil {
		t.Fatal(err)
	}
	if len(base.reads) != 1 || base.reads[0] != blob {
		t.Fatalf("the CAS was asked for %q, want the blob only", base.reads)
	}
	if registry.Len() != 0 {
		t.Fatalf("%d live logs left", registry.Len())
	}
}
