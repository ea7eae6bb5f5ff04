// Command protogen turns one of the module's .proto files into Go. It
// is run by `go generate` in proto/configuration and proto/remoteworker
// (see generate.go there) and needs protoc on PATH (Debian:
// protobuf-compiler) and the Go module proxy the first time it installs
// the plugins.
//
// Two things make a plain protoc command line insufficient here:
//
//   - The files import what no module on this machine ships as .proto
//     source: REAPI's remote_execution.proto imports googleapis files
//     (google/api/annotations.proto, google/longrunning/operations.proto,
//     google/rpc/status.proto), and bb-storage's configuration messages
//     import further bb-storage, googleapis and OpenTelemetry files.
//     Their compiled descriptors are linked into this command by the Go
//     packages it imports (at the versions go.mod pins), so it writes
//     them to a FileDescriptorSet and hands it to protoc with
//     --descriptor_set_in.
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
	"github.com/buildbarn/bb-storage/pkg/proto/configuration/auth"
	"github.com/buildbarn/bb-storage/pkg/proto/configuration/blobstore"
	"github.com/buildbarn/bb-storage/pkg/proto/configuration/global"
	"github.com/buildbarn/bb-storage/pkg/proto/configuration/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	modulePath   = "github.com/bitzel/bitzel-worker"
	protobufPath = "google.golang.org/protobuf"

	// protoc-gen-go-grpc v1.6.2 requires grpc v1.81.0; go.mod has
	// v1.81.1. Bump together with grpc.
	protocGenGoGRPC = "google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"
)

func main() {
	protoFile := flag.String("proto", "", "file to compile, relative to the module root")
	withGRPC := flag.Bool("grpc", false, "also generate gRPC service code")
	flag.Parse()
	if *protoFile == "" || flag.NArg() > 0 {
		log.Fatal("usage: protogen -proto FILE [-grpc]")
	}

	moduleRoot := goList("-m", "-f", "{{.Dir}}", modulePath)
	protobufVersion := goList("-m", "-f", "{{.Version}}", protobufPath)

	work, err := os.MkdirTemp("", "protogen-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)

	// Plugins go into a private directory so that whatever happens to
	// be on PATH cannot produce code for the wrong library versions.
	bin := filepath.Join(work, "bin")
	env := append(os.Environ(), "GOBIN="+bin)
	run(env, "go", "install", protobufPath+"/cmd/protoc-gen-go@"+protobufVersion)
	args := []string{"--plugin=protoc-gen-go=" + filepath.Join(bin, "protoc-gen-go")}
	if *withGRPC {
		run(env, "go", "install", protocGenGoGRPC)
		args = append(args, "--plugin=protoc-gen-go-grpc="+filepath.Join(bin, "protoc-gen-go-grpc"),
			"--go-grpc_out="+moduleRoot, "--go-grpc_opt=module="+modulePath)
	}

	imports := filepath.Join(work, "imports.binpb")
	if err := os.WriteFile(imports, importDescriptorSet(), 0o644); err != nil {
		log.Fatal(err)
	}
	run(os.Environ(), "protoc", append(args,
		"--descriptor_set_in="+imports,
		"--proto_path="+moduleRoot,
		"--go_out="+moduleRoot,
		"--go_opt=module="+modulePath,
		filepath.Join(moduleRoot, *protoFile))...)
}

// importDescriptorSet returns, serialized, the descriptors of every file
// the module's .proto files import and of their imports, in dependency
// order.
func importDescriptorSet() []byte {
	roots := []protoreflect.FileDescriptor{
		remoteexecution.File_build_bazel_remote_execution_v2_remote_execution_proto,
		auth.File_github_com_buildbarn_bb_storage_pkg_proto_configuration_auth_auth_proto,
		blobstore.File_github_com_buildbarn_bb_storage_pkg_proto_configuration_blobstore_blobstore_proto,
		global.File_github_com_buildbarn_bb_storage_pkg_proto_configuration_global_global_proto,
		grpc.File_github_com_buildbarn_bb_storage_pkg_proto_configuration_grpc_grpc_proto,
		anypb.File_google_protobuf_any_proto,
		durationpb.File_google_protobuf_duration_proto,
		emptypb.File_google_protobuf_empty_proto,
		timestamppb.File_google_protobuf_timestamp_proto,
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
