package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	bb_grpc "github.com/buildbarn/bb-storage/pkg/grpc"
	"github.com/buildbarn/bb-storage/pkg/program"
	grpcpb "github.com/buildbarn/bb-storage/pkg/proto/configuration/grpc"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// recordingListener keeps a copy of everything its connections'
// clients send.
type recordingListener struct {
	net.Listener
	mu       sync.Mutex
	received bytes.Buffer
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, l: l}, nil
}

type recordingConn struct {
	net.Conn
	l *recordingListener
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.l.received.Write(p[:n])
	c.l.mu.Unlock()
	return n, err
}

// clientPings counts the PING frames (not acknowledgements) in what
// one client connection sent.
func clientPings(t *testing.T, sent []byte) int {
	t.Helper()
	if !bytes.HasPrefix(sent, []byte(http2.ClientPreface)) {
		t.Fatalf("the connection did not start with the HTTP/2 preface: %q", sent[:min(len(sent), 24)])
	}
	framer := http2.NewFramer(nil, bytes.NewReader(sent[len(http2.ClientPreface):]))
	pings := 0
	for {
		f, err := framer.ReadFrame()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return pings
		}
		if err != nil {
			t.Fatalf("frame %d: %v", pings, err)
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			pings++
		}
	}
}

// The worker's connections to the scheduler and the storage send no
// flow-control (BDP) pings of their own: with grpc-go's dynamic windows,
// every one of these small calls would cost the client a write and two
// reads, and the server a read and a write, for a ping and its answer.
func TestClusterConnectionsDoNotPingPerCall(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listener := &recordingListener{Listener: inner}
	server := grpc.NewServer()
	healthpb.RegisterHealthServer(server, health.NewServer())
	go server.Serve(listener)
	defer server.Stop()

	configured := &grpcpb.ClientConfiguration{Address: inner.Addr().String()}
	original := proto.Clone(configured)
	factory := bb_grpc.NewBaseClientFactory(bb_grpc.BaseClientDialer, nil, nil, nil)
	err = program.RunLocal(context.Background(), func(ctx context.Context, siblingsGroup, dependenciesGroup program.Group) error {
		connection, err := factory.NewClientFromConfiguration(clusterClientConfiguration(configured), dependenciesGroup)
		if err != nil {
			return err
		}
		client := healthpb.NewHealthClient(connection)
		for range 5 {
			if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	server.Stop()
	if !proto.Equal(configured, original) {
		t.Errorf("the configuration was modified: %v", configured)
	}
	listener.mu.Lock()
	defer listener.mu.Unlock()
	if n := clientPings(t, listener.received.Bytes()); n != 0 {
		t.Errorf("the client sent %d pings over 5 calls, want none", n)
	}
}

// Windows the configuration sets are the operator's: kept as they are.
func TestClusterConnectionsKeepConfiguredWindows(t *testing.T) {
	for _, configured := range []*grpcpb.ClientConfiguration{
		{Address: "a:1", InitialWindowSizeBytes: 1 << 20},
		{Address: "a:1", InitialConnWindowSizeBytes: 4 << 20},
	} {
		if got := clusterClientConfiguration(configured); !proto.Equal(got, configured) {
			t.Errorf("%v became %v", configured, got)
		}
	}
}
