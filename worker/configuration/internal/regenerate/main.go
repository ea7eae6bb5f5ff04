// Command regenerate turns configuration.proto into Go. It is run by
// `go generate` in worker/configuration (see generate.go there) and
// needs protoc on PATH (Debian: protobuf-compiler) and the Go module
// proxy the first time it installs protoc-gen-go.
//
// configuration.proto imports bb-storage's configuration messages,
// which import further bb-storage, googleapis and OpenTelemetry files.
// bb-storage's module ships its own .proto files, but not those of its
// dependencies, so rather than a --proto_path per module this command
// hands protoc the compiled descriptors of every imported file, as
// registered by the Go packages it links (the exact versions go.mod
// pins), in a FileDescriptorSet given with --descriptor_set_in.
// protoc-gen-go is installed at exactly the google.golang.org/protobuf
// version in go.mod.
package main

import (
	"bytes"
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
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	modulePath   = "github.com/bitzel/bitzel-worker"
	protobufPath = "google.golang.org/protobuf"
	protoFile    = "worker/configuration/configuration.proto"
)

func main() {
	moduleRoot := goList("-m", "-f", "{{.Dir}}", modulePath)
	protobufVersion := goList("-m", "-f", "{{.Version}}", protobufPath)

	work, err := os.MkdirTemp("", "configuration-regenerate-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)

	// The plugin goes into a private directory so that whatever
	// happens to be on PATH cannot produce code for the wrong library
	// version.
	bin := filepath.Join(work, "bin")
	run(append(os.Environ(), "GOBIN="+bin), "go", "install", protobufPath+"/cmd/protoc-gen-go@"+protobufVersion)

	imports := filepath.Join(work, "imports.binpb")
	if err := os.WriteFile(imports, importDescriptorSet(), 0o644); err != nil {
		log.Fatal(err)
	}
	run(os.Environ(), "protoc",
		"--plugin=protoc-gen-go="+filepath.Join(bin, "protoc-gen-go"),
		"--descriptor_set_in="+imports,
		"--proto_path="+moduleRoot,
		"--go_out="+moduleRoot,
		"--go_opt=module="+modulePath,
		filepath.Join(moduleRoot, protoFile))
}

// importDescriptorSet returns, serialized, the descriptors of every file
// configuration.proto imports and of their imports, in dependency order.
func importDescriptorSet() []byte {
	roots := []protoreflect.FileDescriptor{
		remoteexecution.File_build_bazel_remote_execution_v2_remote_execution_proto,
		auth.File_github_com_buildbarn_bb_storage_pkg_proto_configuration_auth_auth_proto,
		blobstore.File_github_com_buildbarn_bb_storage_pkg_proto_configuration_blobstore_blobstore_proto,
		global.File_github_com_buildbarn_bb_storage_pkg_proto_configuration_global_global_proto,
		grpc.File_github_com_buildbarn_bb_storage_pkg_proto_configuration_grpc_grpc_proto,
		durationpb.File_google_protobuf_duration_proto,
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
