package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bitzel/bitzel-worker/proto/configuration"
	"github.com/buildbarn/bb-storage/pkg/proto/configuration/bb_storage"
	blobstorepb "github.com/buildbarn/bb-storage/pkg/proto/configuration/blobstore"
	grpcpb "github.com/buildbarn/bb-storage/pkg/proto/configuration/grpc"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The sample configurations must keep matching the messages they are
// read into, for the loopback topology and for docker/compose.yaml's.
// (bb_scheduler.jsonnet cannot be checked here: bb-remote-execution,
// which holds its message, is not available as a module.)
func TestSampleConfigurationsAreValid(t *testing.T) {
	t.Setenv("BITZEL_WORKER_INDEX", "1")
	dockerDir := t.TempDir()
	for _, name := range []string{"bb_storage.jsonnet", "worker.jsonnet"} {
		copyFile(t, filepath.Join("../../configs", name), filepath.Join(dockerDir, name))
	}
	copyFile(t, "../../docker/cluster.libsonnet", filepath.Join(dockerDir, "cluster.libsonnet"))

	for _, topology := range []struct {
		dir, scheduler, storage, dataDir string
	}{
		{"../../configs", "127.0.0.1:8983", "127.0.0.1:8980", filepath.Join(defaultDataDir(), "cluster-worker-1")},
		{dockerDir, "scheduler:8983", "storage:8980", "/var/lib/bitzel-worker"},
	} {
		var worker configuration.WorkerConfiguration
		if err := util.UnmarshalConfigurationFromFile(filepath.Join(topology.dir, "worker.jsonnet"), &worker); err != nil {
			t.Fatalf("%s/worker.jsonnet: %v", topology.dir, err)
		}
		if got := worker.Scheduler.GetAddress(); got != topology.scheduler {
			t.Errorf("%s: scheduler at %q", topology.dir, got)
		}
		cas, err := grpcBackend(worker.Blobstore.GetContentAddressableStorage(), "contentAddressableStorage", false)
		if err != nil || cas.Client.GetAddress() != topology.storage {
			t.Errorf("%s: CAS %v, %v", topology.dir, cas, err)
		}
		settings := defaultExecutorSettings()
		if err := settings.apply(worker.Executor); err != nil {
			t.Fatal(err)
		}
		if settings.dataDir != topology.dataDir || settings.warmSandboxes != 2 || settings.maxTime != 2*time.Hour {
			t.Errorf("%s: settings %+v", topology.dir, settings)
		}
		if len(worker.Runners) != 1 || worker.Runners[0].Concurrency != 2 {
			t.Errorf("%s: runners %v", topology.dir, worker.Runners)
		}

		var storage bb_storage.ApplicationConfiguration
		if err := util.UnmarshalConfigurationFromFile(filepath.Join(topology.dir, "bb_storage.jsonnet"), &storage); err != nil {
			t.Errorf("%s/bb_storage.jsonnet: %v", topology.dir, err)
		}
	}

	var serve configuration.ServeConfiguration
	if err := util.UnmarshalConfigurationFromFile("../../configs/serve.jsonnet", &serve); err != nil {
		t.Fatal(err)
	}
	var f serveFlags
	f.executorSettings = defaultExecutorSettings()
	f.metricsListen = "127.0.0.1:9980"
	if err := f.apply(&serve); err != nil {
		t.Fatal(err)
	}
	// The file repeats serve's zero-config defaults, and its
	// diagnostics server replaces --metrics-listen.
	want := defaultExecutorSettings()
	if f.listen != "127.0.0.1:8980" || f.metricsListen != "" || f.shutdownGrace != 30*time.Second || f.executorSettings != want {
		t.Errorf("serve.jsonnet gave %+v, want the defaults %+v", f, want)
	}
}

// configs/worker.jsonnet works as written: without BITZEL_WORKER_INDEX
// it is worker 0.
func TestSampleWorkerConfigurationDefaultsToIndexZero(t *testing.T) {
	t.Setenv(workerIndexVariable, "")
	os.Unsetenv(workerIndexVariable)
	var worker configuration.WorkerConfiguration
	if err := readWorkerConfiguration("../../configs/worker.jsonnet", &worker); err != nil {
		t.Fatal(err)
	}
	if got := worker.Executor.GetDataDirectoryPath(); got != "cluster-worker-0" {
		t.Errorf("data directory %q, want cluster-worker-0", got)
	}
	if got := worker.Runners[0].WorkerId["worker"]; got != "0" {
		t.Errorf("worker ID %v", worker.Runners[0].WorkerId)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOnlyGRPCStorageIsAccepted(t *testing.T) {
	grpc := &blobstorepb.BlobAccessConfiguration{Backend: &blobstorepb.BlobAccessConfiguration_Grpc{
		Grpc: &blobstorepb.GrpcBlobAccessConfiguration{Client: &grpcpb.ClientConfiguration{Address: "storage:8980"}},
	}}
	checked := &blobstorepb.BlobAccessConfiguration{Backend: &blobstorepb.BlobAccessConfiguration_CompletenessChecking{
		CompletenessChecking: &blobstorepb.CompletenessCheckingBlobAccessConfiguration{Backend: grpc},
	}}
	compressed := &blobstorepb.BlobAccessConfiguration{Backend: &blobstorepb.BlobAccessConfiguration_Grpc{
		Grpc: &blobstorepb.GrpcBlobAccessConfiguration{Client: &grpcpb.ClientConfiguration{Address: "storage:8980"}, EnableCompression: true},
	}}
	sharded := &blobstorepb.BlobAccessConfiguration{Backend: &blobstorepb.BlobAccessConfiguration_Sharding{
		Sharding: &blobstorepb.ShardingBlobAccessConfiguration{},
	}}
	for _, c := range []struct {
		name      string
		config    *blobstorepb.BlobAccessConfiguration
		writeOnly bool
		ok        bool
	}{
		{"grpc", grpc, false, true},
		{"completenessChecking for the Action Cache, which is only written", checked, true, true},
		{"completenessChecking for the CAS, which is read", checked, false, false},
		{"compression", compressed, false, false},
		{"sharding", sharded, false, false},
		{"nothing", nil, false, false},
	} {
		backend, err := grpcBackend(c.config, "x", c.writeOnly)
		if c.ok && (err != nil || backend.Client.GetAddress() != "storage:8980") {
			t.Errorf("%s: %v, %v", c.name, backend, err)
		}
		if !c.ok && status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: accepted (%v), want INVALID_ARGUMENT", c.name, err)
		}
	}
}

// stageReportDelay: unset is the cluster client's default, a positive
// value is taken as it is, 0s (or less) reports every stage at once,
// and an invalid duration is the operator's mistake, named.
func TestStageReportDelayFromConfiguration(t *testing.T) {
	for _, tc := range []struct {
		value *durationpb.Duration
		want  time.Duration
	}{
		{nil, 0},
		{durationpb.New(250 * time.Millisecond), 250 * time.Millisecond},
		{durationpb.New(0), -1},
	} {
		got, err := stageReportDelay(&configuration.WorkerConfiguration{StageReportDelay: tc.value})
		if err != nil || got != tc.want {
			t.Errorf("stageReportDelay %v: %v, %v; want %v", tc.value, got, err, tc.want)
		}
	}
	_, err := stageReportDelay(&configuration.WorkerConfiguration{StageReportDelay: &durationpb.Duration{Seconds: 1, Nanos: -1}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "stageReportDelay") {
		t.Errorf("invalid duration: %v, want INVALID_ARGUMENT naming stageReportDelay", err)
	}
}
