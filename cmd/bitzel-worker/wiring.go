package main

import (
	"fmt"
	"log"
	"path/filepath"
	"runtime"
	"time"

	"github.com/bitzel/bitzel-worker/images"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/layers"
	"github.com/bitzel/bitzel-worker/outputs"
	"github.com/bitzel/bitzel-worker/proto/configuration"
	"github.com/bitzel/bitzel-worker/sandbox"
	"github.com/bitzel/bitzel-worker/storage"
	"github.com/bitzel/bitzel-worker/worker"
	"google.golang.org/protobuf/types/known/durationpb"
)

// executorSettings say where and how actions run on this machine. serve
// takes them from flags or a ServeConfiguration, worker from a
// WorkerConfiguration; the defaults are serve's zero-config ones.
type executorSettings struct {
	dataDir                 string
	fileCacheSize           int64
	fileCacheFiles          int
	layerCacheSize          int64
	layerCacheInodes        int64
	defaultTimeout, maxTime time.Duration
	outputLimit             int64
	outputBudgetBytes       int64
	outputBudgetEntries     int64
	memoryLimit, pidsLimit  int64
	cpuMillis               int64
	tmpSize                 int64
	diskBudget              int64
	shmSize                 int64
	execRootPath            string
	hermetic                bool
	hostIDBase, hostIDCount uint32
	cgroups                 string
	cgroupName              string
	warmSandboxes           int
	seccomp                 string
}

func defaultExecutorSettings() executorSettings {
	return executorSettings{
		dataDir:          defaultDataDir(),
		fileCacheSize:    16 << 30,
		fileCacheFiles:   1_000_000,
		layerCacheSize:   32 << 30,
		layerCacheInodes: 4_000_000,
		defaultTimeout:   15 * time.Minute,
		maxTime:          24 * time.Hour,
		outputLimit:      64 << 20,
		// Outputs past these cost more hashing and uploading than a
		// build's legitimate action does; the CAS's own blob limit
		// applies as well.
		outputBudgetBytes:   16 << 30,
		outputBudgetEntries: 1_000_000,
		pidsLimit:           4096,
		tmpSize:             4 << 30,
		shmSize:             sandbox.DefaultShmSizeBytes,
		diskBudget:          4 << 30,
		execRootPath:        sandbox.DefaultExecRootPath,
		cgroups:             string(sandbox.CgroupsAuto),
		cgroupName:          "bitzel-worker",
		warmSandboxes:       runtime.NumCPU(),
		seccomp:             string(sandbox.SeccompDefault),
	}
}

// apply overrides the settings with what an ExecutorConfiguration sets;
// fields left at their zero value keep the current setting.
func (s *executorSettings) apply(c *configuration.ExecutorConfiguration) error {
	if c == nil {
		return nil
	}
	if path := c.DataDirectoryPath; path != "" {
		// A relative path names one of several workers' data
		// directories under the default one, which works for
		// root and for ordinary users alike.
		if !filepath.IsAbs(path) {
			path = filepath.Join(defaultDataDir(), path)
		}
		s.dataDir = path
	}
	setInt64(&s.fileCacheSize, c.FileCacheSizeBytes)
	if c.FileCacheMaximumFiles > 0 {
		s.fileCacheFiles = int(c.FileCacheMaximumFiles)
	}
	setInt64(&s.layerCacheSize, c.LayerCacheSizeBytes)
	if c.LayerCacheMaximumInodes > 0 {
		s.layerCacheInodes = int64(c.LayerCacheMaximumInodes)
	}
	if err := setDuration(&s.defaultTimeout, c.DefaultExecutionTimeout, "defaultExecutionTimeout"); err != nil {
		return err
	}
	if err := setDuration(&s.maxTime, c.MaximumExecutionTimeout, "maximumExecutionTimeout"); err != nil {
		return err
	}
	setInt64(&s.outputLimit, c.MaximumOutputSizeBytes)
	setInt64(&s.outputBudgetBytes, c.MaximumOutputBytesPerAction)
	setInt64(&s.outputBudgetEntries, c.MaximumOutputEntriesPerAction)

	sb := c.Sandbox
	if sb == nil {
		return nil
	}
	setString(&s.execRootPath, sb.ExecRootPath)
	s.hermetic = s.hermetic || sb.Hermetic
	if sb.HostIdBase != 0 {
		s.hostIDBase = sb.HostIdBase
	}
	if sb.HostIdCount != 0 {
		s.hostIDCount = sb.HostIdCount
	}
	switch sb.Cgroups {
	case configuration.SandboxConfiguration_AUTO:
	case configuration.SandboxConfiguration_V1:
		s.cgroups = string(sandbox.CgroupsV1)
	case configuration.SandboxConfiguration_V2:
		s.cgroups = string(sandbox.CgroupsV2)
	case configuration.SandboxConfiguration_NONE:
		s.cgroups = string(sandbox.CgroupsNone)
	default:
		return fmt.Errorf("sandbox.cgroups: unknown mode %v", sb.Cgroups)
	}
	setString(&s.cgroupName, sb.CgroupName)
	if sb.WarmSandboxes != nil {
		s.warmSandboxes = int(*sb.WarmSandboxes)
	}
	setInt64(&s.memoryLimit, sb.MemoryLimitBytes)
	if sb.MaximumProcesses != nil {
		s.pidsLimit = *sb.MaximumProcesses
	}
	setInt64(&s.cpuMillis, sb.CpuMillis)
	setInt64(&s.tmpSize, sb.TmpSizeBytes)
	if sb.DiskBudgetBytes != nil {
		s.diskBudget = *sb.DiskBudgetBytes
	}
	if _, err := sandbox.ParseSeccompMode(sb.Seccomp); err != nil {
		return fmt.Errorf("sandbox.seccomp: %w", err)
	}
	setString(&s.seccomp, sb.Seccomp)
	setInt64(&s.shmSize, sb.ShmSizeBytes)
	return nil
}

func setString(dst *string, value string) {
	if value != "" {
		*dst = value
	}
}

func setInt64(dst *int64, value int64) {
	if value != 0 {
		*dst = value
	}
}

func setDuration(dst *time.Duration, value *durationpb.Duration, name string) error {
	if value == nil {
		return nil
	}
	if err := value.CheckValid(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if d := value.AsDuration(); d > 0 {
		*dst = d
	}
	return nil
}

// machine is what every executor of the process shares: the sandbox
// runner and the caches under the data directory.
type machine struct {
	settings     *executorSettings
	storage      *storage.Storage
	runner       sandbox.Runner
	materializer layers.Materializer
	outputs      outputs.OutputCapturer
	closeCaches  func()
	logger       *log.Logger
	// recorder (nil: none) is told of every action, for the status page.
	recorder worker.ActionRecorder
	// containerImages (nil: none) are the images actions may name.
	containerImages *images.Store
	// layerCache holds input layers and container images' layers.
	layerCache layers.LayerCache
}

// newMachine starts the sandbox runner and opens the caches under the
// data directory. Close releases both.
func newMachine(s *executorSettings, storage *storage.Storage, logger *log.Logger) (*machine, error) {
	// The caller holds the data directory (openDataDirectory).

	// What a predecessor killed with SIGKILL left: mounts first (a
	// build directory cannot be removed under one), its cgroups as
	// the runner starts, its build directories below.
	leftovers, err := sandbox.RemoveLeftoverMounts(s.dataDir)
	if err != nil {
		return nil, err
	}
	leftovers.BuildDirectories = sandbox.CountEntries(filepath.Join(s.dataDir, "build"))

	// Sandbox: namespaces and limits.
	runner, owner, cgroupNote, err := newRunner(s, &leftovers)
	if err != nil {
		return nil, err
	}
	logger.Printf("sandbox: %v; %s", runner, cgroupNote)

	// Caches: files by digest, and directories as layers. Both
	// belong to the actions' root, so that actions can copy up and
	// modify their inputs.
	files, err := layers.NewFileCache(filepath.Join(s.dataDir, "files"), s.fileCacheSize, s.fileCacheFiles, owner)
	if err != nil {
		runner.Close()
		return nil, err
	}
	layerCache, err := layers.NewLayerCache(filepath.Join(s.dataDir, "layers"), s.layerCacheSize, s.layerCacheInodes)
	if err != nil {
		files.Close()
		runner.Close()
		return nil, err
	}
	// Running actions' directories of an earlier run, whatever
	// their executors were called then.
	if err := fsutil.RemoveAll(filepath.Join(s.dataDir, "build")); err != nil {
		layerCache.Close()
		files.Close()
		runner.Close()
		return nil, fmt.Errorf("wipe build directory: %w", err)
	}
	if !leftovers.Empty() {
		logger.Printf("start-up: removed what an earlier run left behind: %v", leftovers)
	}
	return &machine{
		settings: s,
		storage:  storage,
		runner:   runner,
		materializer: layers.NewMaterializer(storage, files, layerCache, layers.MaterializerOptions{
			Owner:   owner,
			Planner: layers.PlannerOptions{AllowAbsoluteSymlinks: true},
		}),
		outputs: outputs.NewOutputCapturer(storage, outputs.OutputCapturerOptions{
			SymlinkAbsolutePathStrategy: worker.SymlinkAbsolutePathStrategy,
			MaximumBytes:                s.outputBudgetBytes,
			MaximumEntries:              s.outputBudgetEntries,
		}),
		layerCache: layerCache,
		// Closing marks the caches clean, so a restart keeps them.
		closeCaches: func() {
			layerCache.Close()
			files.Close()
		},
		logger: logger,
	}, nil
}

// Close closes the caches, then stops the sandboxes. Every executor
// must have returned. A runner that cannot remove its cgroups leaves
// them for the next start, which says so; the log names them now.
func (m *machine) Close() {
	m.closeCaches()
	if err := m.runner.Close(); err != nil {
		m.logger.Printf("stopping the sandboxes: %v (the next start removes what is left)", err)
	}
}

// newRunner also returns who cached inputs must belong to: the host
// uid of the actions' root.
func newRunner(s *executorSettings, leftovers *sandbox.Leftovers) (sandbox.Runner, *layers.Owner, string, error) {
	config := sandbox.Config{
		StateDir:       filepath.Join(s.dataDir, "sandbox"),
		ExecRootPath:   s.execRootPath,
		ExecRootIsRoot: s.hermetic,
		WarmSandboxes:  s.warmSandboxes,
		HostIDBase:     s.hostIDBase,
		HostIDCount:    s.hostIDCount,
		Seccomp:        sandbox.SeccompMode(s.seccomp),
		ShmSizeBytes:   s.shmSize,
		// Layers, images and the actions' upper and work directories
		// all live below the data directory.
		DataRoots:    []string{s.dataDir},
		MaxProcesses: s.pidsLimit,
	}
	note := "cgroup limits enforced"
	manager, err := sandbox.DetectCgroups(sandbox.CgroupMode(s.cgroups), s.cgroupName)
	if err != nil {
		note = fmt.Sprintf("no cgroups (%v): memory limits are not enforced, processes are limited with RLIMIT_NPROC", err)
	} else {
		config.Cgroups = manager
		note = manager.String()
		leftovers.Cgroups = sandbox.RemovedCgroupLeftovers(manager)
	}
	runner, err := sandbox.NewNamespaceRunner(config)
	if err != nil {
		if manager != nil {
			manager.Close()
		}
		return nil, nil, "", err
	}
	uid, gid := config.ActionRootIDs()
	return runner, &layers.Owner{UID: uid, GID: gid}, note, nil
}

// newExecutor returns the decorator stack every action goes through,
// as bb_worker builds its BuildExecutor: Action Cache writes, then
// metrics, then a log line, around the local executor that fetches,
// materialises, runs and uploads. buildDirectory must be its own;
// platform is what actions may ask for.
func (m *machine) newExecutor(buildDirectory, workerName string, platform worker.PlatformOffer) (worker.Executor, error) {
	s := m.settings
	executor, err := worker.NewLocalExecutor(worker.LocalExecutorOptions{
		Storage:          m.storage,
		Materializer:     m.materializer,
		Outputs:          m.outputs,
		Runner:           m.runner,
		BuildDirectory:   buildDirectory,
		WorkerName:       workerName,
		Platform:         platform,
		DefaultTimeout:   s.defaultTimeout,
		MaximumTimeout:   s.maxTime,
		OutputLimitBytes: s.outputLimit,
		Limits: sandbox.Limits{
			MemoryBytes:  s.memoryLimit,
			MaxProcesses: s.pidsLimit,
			CPUMillis:    s.cpuMillis,
			TmpSizeBytes: s.tmpSize,
			DiskBytes:    s.diskBudget,
		},
		ExecRootIsRoot:  s.hermetic,
		ContainerImages: m.containerImages,
	})
	if err != nil {
		return nil, err
	}
	executor = worker.NewCachingExecutor(executor, m.storage)
	executor = worker.NewMetricsExecutor(executor)
	executor = worker.NewLoggingExecutor(executor, m.logger)
	if m.recorder != nil {
		executor = worker.NewRecordingExecutor(executor, m.recorder)
	}
	return executor, nil
}
