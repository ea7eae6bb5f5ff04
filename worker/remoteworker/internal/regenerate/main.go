// Command regenerate turns remoteworker.proto into Go. It is run by
// `go generate` in worker/remoteworker (see generate.go there) and
// needs protoc on PATH (Debian: protobuf-compiler) and the Go module
// proxy the first time it installs the plugins.
//
// Two things make a plain protoc command line insufficient here:
//
//   - REAPI's remote_execution.proto imports googleapis files
//     (google/api/annotations.proto, google/longrunning/operations.proto,
//     google/rpc/status.proto) that no module or package on this machine
//     ships as .proto source. Their compiled descriptors are linked into
//     every Go program that imports REAPI, so this command writes those
//     descriptors to a FileDescriptorSet and hands it to protoc with
//     --descriptor_set_in. REAPI itself is read from the remote-apis
//     module in the module cache, at the version go.mod pins.
//   - The plugins must match the libraries the generated code runs
//     against. protoc-gen-go is installed at exactly the
//     google.golang.org/protobuf version in go.mod; protoc-gen-go-grpc
//     lives in its own module and is pinned below to the release that
//     targets the grpc version in go.mod.
package main

import (
	"bytes"
	"flag"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	// Registered for the imports of remoteworker.proto itself.
	_ "google.golang.org/protobuf/types/known/anypb"
	_ "google.golang.org/protobuf/types/known/emptypb"
	_ "google.golang.org/protobuf/types/known/timestamppb"
)

const (
	modulePath   = "github.com/bitzel/bitzel-worker"
	protobufPath = "google.golang.org/protobuf"
	remoteAPIs   = "github.com/bazelbuild/remote-apis"

	// protoc-gen-go-grpc v1.6.2 requires grpc v1.81.0; go.mod has
	// v1.81.1. Bump together with grpc.
	protocGenGoGRPC = "google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"
)

func main() {
	protoFile := flag.String("proto", "worker/remoteworker/remoteworker.proto", "file to compile, relative to the module root")
	flag.Parse()

	moduleRoot := goList("-m", "-f", "{{.Dir}}", modulePath)
	remoteAPIsDir := goList("-m", "-f", "{{.Dir}}", remoteAPIs)
	protobufVersion := goList("-m", "-f", "{{.Version}}", protobufPath)

	work, err := os.MkdirTemp("", "remoteworker-regenerate-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)

	// Plugins go into a private directory so that whatever happens to
	// be on PATH cannot produce code for the wrong library versions.
	bin := filepath.Join(work, "bin")
	run(append(os.Environ(), "GOBIN="+bin), "go", "install", protobufPath+"/cmd/protoc-gen-go@"+protobufVersion)
	run(append(os.Environ(), "GOBIN="+bin), "go", "install", protocGenGoGRPC)

	imports := filepath.Join(work, "imports.binpb")
	if err := os.WriteFile(imports, importDescriptorSet(), 0o644); err != nil {
		log.Fatal(err)
	}

	run(os.Environ(), "protoc",
		"--plugin=protoc-gen-go="+filepath.Join(bin, "protoc-gen-go"),
		"--plugin=protoc-gen-go-grpc="+filepath.Join(bin, "protoc-gen-go-grpc"),
		"--descriptor_set_in="+imports,
		"--proto_path="+moduleRoot,
		"--proto_path="+remoteAPIsDir,
		"--go_out="+moduleRoot,
		"--go_opt=module="+modulePath,
		"--go-grpc_out="+moduleRoot,
		"--go-grpc_opt=module="+modulePath,
		filepath.Join(moduleRoot, *protoFile))
}

// importDescriptorSet returns, serialized, the descriptors of REAPI and
// of everything it and remoteworker.proto import, in dependency order,
// as registered by the Go packages this command links.
func importDescriptorSet() []byte {
	roots := []protoreflect.FileDescriptor{
		remoteexecution.File_build_bazel_remote_execution_v2_remote_execution_proto,
	}
	for _, name := range []string{
		"google/protobuf/any.proto",
		"google/protobuf/empty.proto",
		"google/protobuf/timestamp.proto",
	} {
		roots = append(roots, mustFindFile(name))
	}

	var set descriptorpb.FileDescriptorSet
	seen := map[string]bool{}
	var add func(protoreflect.FileDescriptor)
	add = func(file protoreflect.FileDescriptor) {
		if seen[file.Path()] {
			return
		}
		seen[file.Path()] = true
		imports := file.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(file))
	}
	for _, root := range roots {
		add(root)
	}
	data, err := proto.Marshal(&set)
	if err != nil {
		log.Fatal(err)
	}
	return data
}

func mustFindFile(path string) protoreflect.FileDescriptor {
	file, err := protoregistry.GlobalFiles.FindFileByPath(path)
	if err != nil {
		log.Fatalf("%s is not linked into this command: %s", path, err)
	}
	return file
}

func goList(args ...string) string {
	var out bytes.Buffer
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		log.Fatalf("go list %s: %s", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(out.String())
}

func run(env []string, name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		log.Fatalf("%s %s: %s", name, strings.Join(args, " "), err)
	}
}
