package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	bzclient "github.com/bitzel/bitzel-worker/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestEveryAdvertisedDigestFunctionIsHonoured: for each digest function
// Capabilities lists, inputs uploaded in it run, and the outputs and
// the Action Cache entry come back in it; where REAPI lets a server
// infer the function from the hash length, an unset digest_function
// finds the same result.
// Long on purpose: the same round trip for each digest function, with one shared server.
func TestEveryAdvertisedDigestFunctionIsHonoured(t *testing.T) {
	s := startServer(t)
	c := s.client()
	caps, err := c.caps.GetCapabilities(context.Background(), &remoteexecution.GetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	advertised := caps.ExecutionCapabilities.GetDigestFunctions()
	if len(advertised) < 2 {
		t.Fatalf("execution digest functions %v", advertised)
	}
	ctx := context.Background()
	for _, fn := range advertised {
		t.Run(fn.String(), func(t *testing.T) {
			// Its helpers fail this subtest, not the parent, and
			// hash with fn and name it in every request.
			c := c.in(t, fn)
			hash := c.hash
			input := []byte("input for " + fn.String() + "\n")
			root := c.uploadProto(&remoteexecution.Directory{Files: []*remoteexecution.FileNode{{Name: "in.txt", Digest: c.upload(input)[0]}}})
			command := c.uploadProto(&remoteexecution.Command{
				Arguments:   sh("mkdir -p dir && tr a-z A-Z <in.txt >out.txt && cp in.txt dir/copy"),
				OutputPaths: []string{"dir", "out.txt"},
			})
			actionDigest := c.uploadProto(&remoteexecution.Action{CommandDigest: command, InputRootDigest: root, Timeout: nil})
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			stream := c.startExecute(ctx, actionDigest, false)
			response, ops := c.drain(stream)
			if st := status.FromProto(response.Status); st.Code() != codes.OK || response.Result.GetExitCode() != 0 {
				t.Fatalf("status %v, exit %d\n%s", st, response.Result.GetExitCode(), s.logs())
			}
			metadata := &remoteexecution.ExecuteOperationMetadata{}
			if err := ops[0].Metadata.UnmarshalTo(metadata); err != nil || metadata.DigestFunction != fn {
				t.Errorf("operation metadata digest function %v (%v)", metadata.DigestFunction, err)
			}
			result := response.Result
			if len(result.OutputFiles) != 1 || !proto.Equal(result.OutputFiles[0].Digest, hash([]byte(strings.ToUpper(string(input))))) {
				t.Fatalf("output files %v, want out.txt hashed with %v", result.OutputFiles, fn)
			}
			// c.read checks that the blob has its digest in fn.
			read := c.read
			if len(result.OutputDirectories) != 1 {
				t.Fatalf("output directories %v", result.OutputDirectories)
			}
			tree := &remoteexecution.Tree{}
			if err := proto.Unmarshal(read(result.OutputDirectories[0].TreeDigest), tree); err != nil {
				t.Fatal(err)
			}
			if files := tree.Root.GetFiles(); len(files) != 1 || !proto.Equal(files[0].Digest, hash(input)) {
				t.Fatalf("tree root files %v, want copy with the input's %v digest", files, fn)
			}
			if result.StdoutDigest != nil && result.StdoutDigest.SizeBytes == 0 && !proto.Equal(result.StdoutDigest, hash(nil)) {
				t.Errorf("empty stdout digest %v", result.StdoutDigest)
			}
			cached, err := c.ac.GetActionResult(ctx, &remoteexecution.GetActionResultRequest{ActionDigest: actionDigest, DigestFunction: fn})
			if err != nil || !proto.Equal(cached.OutputFiles[0].Digest, result.OutputFiles[0].Digest) {
				t.Fatalf("GetActionResult in %v: %v, %v", fn, cached, err)
			}
			// Hash-length detection (REAPI: only for the functions
			// that existed before digest_function).
			legacy := map[remoteexecution.DigestFunction_Value]bool{remoteexecution.DigestFunction_MD5: true, remoteexecution.DigestFunction_SHA1: true,
				remoteexecution.DigestFunction_SHA256: true, remoteexecution.DigestFunction_SHA384: true, remoteexecution.DigestFunction_SHA512: true}
			if legacy[fn] {
				// The raw stub: Remote always names its function.
				stream, err := c.exec.Execute(ctx, &remoteexecution.ExecuteRequest{ActionDigest: actionDigest})
				if err != nil {
					t.Fatal(err)
				}
				again, _ := c.drain(stream)
				if !again.CachedResult || !proto.Equal(again.Result.OutputFiles[0].Digest, result.OutputFiles[0].Digest) {
					t.Errorf("Execute without digest_function: cached %v, %v", again.CachedResult, again.Result.GetOutputFiles())
				}
			}
		})
	}
	// A value the server does not support is refused, named.
	unsupported := remoteexecution.DigestFunction_VSO
	for _, fn := range advertised {
		if fn == unsupported {
			t.Fatalf("%v is advertised", unsupported)
		}
	}
	stream, err := c.exec.Execute(ctx, &remoteexecution.ExecuteRequest{ActionDigest: digestOf([]byte("x")), DigestFunction: unsupported})
	if err == nil {
		_, err = bzclient.Follow(stream, nil)
	}
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), unsupported.String()) {
		t.Errorf("Execute with %v: %v, want INVALID_ARGUMENT naming it", unsupported, err)
	}
}
