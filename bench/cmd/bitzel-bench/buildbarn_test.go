package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitzel/bitzel-worker/proto/configuration"
	"github.com/buildbarn/bb-storage/pkg/util"
	"github.com/google/go-jsonnet"
)

func TestMissingPeers(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"bb_storage": 0o755, "bb_scheduler": 0o755, "bb_worker": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/true\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	// bb_worker is there but not executable: as good as missing.
	got := missingPeers(dir)
	if strings.Join(got, ",") != "bb_worker,bb_runner" {
		t.Fatalf("missingPeers = %v, want bb_worker, bb_runner", got)
	}
	msg := missingPeersMessage(dir, got)
	for _, want := range []string{"bb_worker, bb_runner", dir, "skipping all-Buildbarn", "running the rest"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "bitzel cluster") {
		t.Errorf("message %q skips the bitzel cluster, which bb_storage and bb_scheduler suffice for", msg)
	}
	// No folder: everything is missing, both cluster sides skipped.
	none := missingPeers("")
	if len(none) != 4 {
		t.Fatalf("missingPeers(\"\") = %v", none)
	}
	if msg := missingPeersMessage("", none); !strings.Contains(msg, "no -peers folder") || !strings.Contains(msg, "bitzel cluster") {
		t.Errorf("message without a folder: %q", msg)
	}
	if msg := missingPeersMessage(dir, nil); msg != "" {
		t.Errorf("nothing missing, yet %q", msg)
	}
}

func evaluate(t *testing.T, path string) map[string]any {
	t.Helper()
	vm := jsonnet.MakeVM()
	vm.ExtVar("BITZEL_WORKER_INDEX", "0")
	out, err := vm.EvaluateFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWriteClusterConfigs(t *testing.T) {
	dir := t.TempDir()
	c, err := writeClusterConfigs("../../../configs", dir, "{ executor+: { sandbox+: { memoryLimitBytes: 0 } } }")
	if err != nil {
		t.Fatal(err)
	}
	// The bitzel worker's configuration is the repository's, with its
	// data directory under the run's folder and the bench platform.
	os.Setenv("BITZEL_WORKER_INDEX", "0")
	var w configuration.WorkerConfiguration
	if err := util.UnmarshalConfigurationFromFile(c.bitzelWorker, &w); err != nil {
		t.Fatal(err)
	}
	if got := w.Executor.GetDataDirectoryPath(); got != filepath.Join(dir, "bitzel/worker-0") {
		t.Errorf("data directory %q, want under %s", got, dir)
	}
	if len(w.Runners) != 1 || w.Runners[0].Concurrency != 2 {
		t.Fatalf("runners %v, want configs/worker.jsonnet's one runner of 2 slots", w.Runners)
	}
	if p := w.Runners[0].Platform.GetProperties(); len(p) != 1 || p[0].Name != benchPlatformProperty || p[0].Value != "bitzel" {
		t.Errorf("bitzel runner platform %v", p)
	}
	if w.Executor.Sandbox.GetMemoryLimitBytes() == 0 || w.Runners[0].WorkerId["worker"] != "0" {
		t.Errorf("configs/worker.jsonnet's sandbox and worker ID were not kept: %v", w.Executor.Sandbox)
	}

	// Worker 1, the variant: its own data directory, platform and
	// worker ID, and the variant merged in.
	os.Setenv("BITZEL_WORKER_INDEX", "1")
	defer os.Setenv("BITZEL_WORKER_INDEX", "0")
	var v configuration.WorkerConfiguration
	if err := util.UnmarshalConfigurationFromFile(c.bitzelWorker, &v); err != nil {
		t.Fatal(err)
	}
	if got := v.Executor.GetDataDirectoryPath(); got != filepath.Join(dir, "bitzel/worker-1") {
		t.Errorf("variant data directory %q", got)
	}
	if p := v.Runners[0].Platform.GetProperties(); len(p) != 1 || p[0].Value != "bitzel-variant" || v.Runners[0].WorkerId["worker"] != "1" {
		t.Errorf("variant runner %v", v.Runners[0])
	}
	if v.Executor.Sandbox.GetMemoryLimitBytes() != 0 || v.Executor.Sandbox.GetWarmSandboxes() != w.Executor.Sandbox.GetWarmSandboxes() {
		t.Errorf("variant sandbox %v: want worker 0's without the memory limit", v.Executor.Sandbox)
	}

	// bb_worker: native build directory and cache in the run's
	// folder, 2 slots, reaching bb_runner where it listens.
	bw := evaluate(t, c.bbWorker)
	bd := bw["buildDirectories"].([]any)[0].(map[string]any)
	native := bd["native"].(map[string]any)
	if native["buildDirectoryPath"] != filepath.Join(dir, "bb/build") || native["cacheDirectoryPath"] != filepath.Join(dir, "bb/cache") {
		t.Errorf("native build directory %v", native)
	}
	runner := bd["runners"].([]any)[0].(map[string]any)
	if runner["concurrency"] != 2.0 || runner["endpoint"].(map[string]any)["address"] != "unix://"+c.runnerSocket {
		t.Errorf("bb_worker runner %v", runner)
	}
	if bw["scheduler"].(map[string]any)["address"] != "127.0.0.1:8983" {
		t.Errorf("bb_worker scheduler %v, want configs/cluster.libsonnet's worker endpoint", bw["scheduler"])
	}
	br := evaluate(t, c.bbRunner)
	if br["buildDirectoryPath"] != native["buildDirectoryPath"] {
		t.Errorf("bb_runner builds in %v, bb_worker in %v", br["buildDirectoryPath"], native["buildDirectoryPath"])
	}
	if got := br["grpcServers"].([]any)[0].(map[string]any)["listenPaths"].([]any)[0]; got != c.runnerSocket {
		t.Errorf("bb_runner listens on %v", got)
	}
	// bb_storage and bb_scheduler: configs/ unchanged.
	for _, name := range []string{"bb_storage", "bb_scheduler"} {
		want := evaluate(t, filepath.Join("../../../configs", name+".jsonnet"))
		got := evaluate(t, filepath.Join(dir, name+".jsonnet"))
		a, _ := json.Marshal(want)
		b, _ := json.Marshal(got)
		if string(a) != string(b) {
			t.Errorf("%s differs from configs/", name)
		}
	}

	if _, err := writeClusterConfigs(t.TempDir(), t.TempDir(), ""); err == nil || !strings.Contains(err.Error(), "cluster.libsonnet") {
		t.Errorf("an empty configs folder: %v, want an error naming the missing file", err)
	}
}
