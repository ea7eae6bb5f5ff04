package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// startedWriter closes started at the action's first output, so that a
// test knows the command runs (inside its cgroup) without polling.
type startedWriter struct {
	once    sync.Once
	started chan struct{}
}

func (w *startedWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.started) })
	return len(p), nil
}

// TestCloseRemovesTheRunnersOwnCgroups: Close with an action in flight
// ends it, waits for it, and only then removes the runner's cgroups, so
// that none of its directories remains (a cleanly stopped serve was
// seen to leave its own); a Run after Close is refused. Without cgroups
// (rootless here) the same holds of the run and of Run after Close.
func TestCloseRemovesTheRunnersOwnCgroups(t *testing.T) {
	t.Run("no-cgroups", func(t *testing.T) {
		testCloseWithActionInFlight(t, nil, nil, Limits{})
	})
	if os.Geteuid() != 0 {
		// Only root manages cgroups on this host (none is delegated
		// to ordinary users); the subtests below need them.
		return
	}
	t.Run("v1", func(t *testing.T) {
		manager, err := testCgroupV1Manager()
		if err != nil {
			t.Fatal(err)
		}
		v1 := manager.(*cgroupV1)
		var dirs []string
		for _, dir := range v1.dirs {
			dirs = append(dirs, dir)
		}
		testCloseWithActionInFlight(t, manager, dirs, Limits{MemoryBytes: 256 << 20, MaxProcesses: 64, CPUMillis: 2000})
	})
	t.Run("v2", func(t *testing.T) {
		manager, err := testCgroupV2Manager(t)
		if err != nil {
			t.Fatal(err)
		}
		testCloseWithActionInFlight(t, manager, []string{manager.(*cgroupV2).parent}, Limits{})
	})
}

// testCgroupV1Manager is the v1 manager DetectCgroups would make on a
// host that mounts the v1 controllers.
func testCgroupV1Manager() (CgroupManager, error) {
	mounts, own, err := readSelfCgroups()
	if err != nil {
		return nil, err
	}
	return NewCgroupV1Manager(mounts, own, "bitzel-test-close")
}

// testCgroupV2Manager is a v2 manager in a real cgroup2 hierarchy. The
// host's offers no memory, pids or cpu controller (they are bound to
// v1), so the manager is made without them: processes join, stay
// charged and keep rmdir at EBUSY exactly as with them, which is what
// Close's order is about. The test's limits need no controller.
func testCgroupV2Manager(t *testing.T) (CgroupManager, error) {
	if m, err := DetectCgroups(CgroupsV2, "bitzel-test-close"); err == nil {
		return m, nil
	}
	mounts, own, err := readSelfCgroups()
	if err != nil {
		return nil, err
	}
	if mounts["cgroup2"] == "" {
		return nil, fmt.Errorf("root on a host without a cgroup2 hierarchy mounted: %v", mounts)
	}
	parent := filepath.Join(mounts["cgroup2"], own[""], fmt.Sprintf("bitzel-test-close-%d", os.Getpid()))
	if err := os.Mkdir(parent, 0o755); err != nil {
		return nil, err
	}
	t.Cleanup(func() { removeCgroupTree(parent) })
	return &cgroupV2{parent: parent, removeParent: true}, nil
}

// orderCheckingManager records how many of its action cgroups were
// not yet removed when the runner closed it: the kernel refuses to
// remove a group with children or processes, and the rmdir retries
// hide a wrong order only until the machine is slow enough.
type orderCheckingManager struct {
	CgroupManager
	mu          sync.Mutex
	live        int
	liveAtClose int
}

func (m *orderCheckingManager) Create(name string, limits Limits) (ActionCgroup, error) {
	c, err := m.CgroupManager.Create(name, limits)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.live++
	m.mu.Unlock()
	return &orderCheckingCgroup{ActionCgroup: c, manager: m}, nil
}

func (m *orderCheckingManager) Close() error {
	m.mu.Lock()
	m.liveAtClose = m.live
	m.mu.Unlock()
	return m.CgroupManager.Close()
}

type orderCheckingCgroup struct {
	ActionCgroup
	manager *orderCheckingManager
	once    sync.Once
}

func (c *orderCheckingCgroup) Remove() error {
	c.once.Do(func() {
		c.manager.mu.Lock()
		c.manager.live--
		c.manager.mu.Unlock()
	})
	return c.ActionCgroup.Remove()
}

// testCloseWithActionInFlight: limits must make the manager create the
// action a cgroup (v1 creates one per controller that a limit needs,
// v2 one whatever the limits).
func testCloseWithActionInFlight(t *testing.T, manager CgroupManager, runnerDirs []string, limits Limits) {
	var checking *orderCheckingManager
	if manager != nil {
		checking = &orderCheckingManager{CgroupManager: manager}
		manager = checking
	}
	e := newEnv(t, func(c *Config) { c.Cgroups = manager })
	started := &startedWriter{started: make(chan struct{})}
	type runResult struct {
		result *Result
		err    error
	}
	ran := make(chan runResult, 1)
	go func() {
		result, err := e.runner.Run(context.Background(), &Spec{
			Mounts: []Mount{e.mount("", e.dir("layers/empty"))},
			Argv:   []string{"/bin/sh", "-c", "echo started; exec sleep 600"},
			Env:    []string{"PATH=/usr/bin:/bin"},
			Stdout: started,
			Stderr: started,
			Limits: limits,
		})
		ran <- runResult{result, err}
	}()
	<-started.started
	var actionDirs []string
	for _, dir := range runnerDirs {
		actions, _ := filepath.Glob(filepath.Join(dir, "action-*"))
		actionDirs = append(actionDirs, actions...)
	}
	if manager != nil && len(actionDirs) == 0 {
		t.Fatalf("precondition: the running action has no cgroup under %v", runnerDirs)
	}

	if err := e.runner.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if checking != nil && checking.liveAtClose != 0 {
		t.Errorf("the runner removed its own cgroups while %d action cgroups were still there", checking.liveAtClose)
	}
	for _, dir := range append(actionDirs, runnerDirs...) {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("cgroup %s remains after Close (%v)", dir, err)
		}
	}
	if r := <-ran; r.err == nil {
		t.Errorf("the action in flight when Close was called finished normally: exit %d", r.result.ExitCode)
	} else if !errors.Is(r.err, ErrRunnerClosed) {
		t.Errorf("the action in flight when Close was called: %v, want %v", r.err, ErrRunnerClosed)
	}
	_, err := e.runner.Run(context.Background(), &Spec{
		Mounts: []Mount{e.mount("", e.dir("layers/empty"))},
		Argv:   []string{"/bin/true"},
		Env:    []string{"PATH=/usr/bin:/bin"},
		Stdout: &strings.Builder{},
		Stderr: &strings.Builder{},
	})
	if !errors.Is(err, ErrRunnerClosed) {
		t.Errorf("Run after Close: %v, want %v", err, ErrRunnerClosed)
	}
}
