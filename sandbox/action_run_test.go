package sandbox

import (
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestEveryWayOutOfRunReleasesTheActionOnce: whichever way Run ends,
// before the sandbox exists, with a PID 1 that never got its action,
// with a sandbox error reported by PID 1, or with a result, the
// action's cgroup is removed exactly once; a PID 1 that reported left
// the cgroup and waits in the pool for the next action, any other is
// gone; and a returned Result's Released is closed.
func TestEveryWayOutOfRunReleasesTheActionOnce(t *testing.T) {
	manager := &recordingManager{}
	e := newEnv(t, func(c *Config) {
		c.Cgroups = manager
		// No warm PID 1s, so that any left is the run's.
		c.WarmSandboxes = 0
	})
	runner := e.runner.(*namespaceRunner)
	for _, c := range []struct {
		name    string
		spec    func() *Spec
		join    error
		wantErr string
		// reported: PID 1 served the action and may serve another.
		reported bool
	}{{
		name: "output file cannot be created",
		spec: func() *Spec {
			return &Spec{Mounts: []Mount{e.mount("", e.dir("layers/empty"))}, Argv: []string{"/bin/true"},
				StdoutPath: filepath.Join(e.base, "missing", "stdout"), StderrPath: filepath.Join(e.base, "stderr")}
		},
		wantErr: "create output file",
	}, {
		name: "joining the cgroup fails",
		spec: func() *Spec {
			return &Spec{Mounts: []Mount{e.mount("", e.dir("layers/empty"))}, Argv: []string{"/bin/true"}}
		},
		join:    errors.New("cgroup.procs: no such device"),
		wantErr: "join cgroup",
	}, {
		name: "PID 1 reports a sandbox error",
		spec: func() *Spec {
			return &Spec{Mounts: []Mount{e.mount("", e.dir("layers/empty"))}, Argv: []string{"/bin/true"}, WorkingDirectory: "no/such/dir"}
		},
		wantErr:  "no/such/dir",
		reported: true,
	}, {
		name: "the action runs",
		spec: func() *Spec {
			return &Spec{Mounts: []Mount{e.mount("", e.dir("layers/empty"))}, Argv: []string{"/bin/sh", "-c", "echo ran"}}
		},
		reported: true,
	}} {
		t.Run(c.name, func(t *testing.T) {
			manager.reset(c.join)
			o, err := e.tryRun(c.spec())
			if c.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("Run: %v, want an error about %q", err, c.wantErr)
			}
			if err == nil {
				if o.stdout != "ran\n" {
					t.Errorf("stdout %q", o.stdout)
				}
				select {
				case <-o.Released:
				case <-time.After(10 * time.Second):
					t.Fatal("Released was not closed")
				}
				o.closeDiskBudget()
			}
			// Retired PID 1s and cgroups are released in the
			// background.
			runner.exiting.Wait()
			runner.pool.mu.Lock()
			idle := len(runner.pool.idle)
			runner.pool.mu.Unlock()
			if _, inits := sandboxProcesses(t); len(inits) != idle || idle > 1 {
				t.Errorf("PID 1s %v left after the run, %d of them idle in the pool", inits, idle)
			}
			if created, removed := manager.counts(); created != 1 || removed != 1 {
				t.Errorf("%d cgroups created, %d removals: want one of each", created, removed)
			}
			if left, want := int(manager.left.Load()), map[bool]int{false: 0, true: 1}[c.reported]; left != want {
				t.Errorf("PID 1 left the cgroup %d times, want %d", left, want)
			}
		})
	}
}

// recordingManager hands out fake cgroups and counts their removals;
// Join fails with joinErr when it is set.
type recordingManager struct {
	mu               sync.Mutex
	joinErr          error
	created, removed atomic.Int32
	left             atomic.Int32
}

func (m *recordingManager) reset(joinErr error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.joinErr = joinErr
	m.created.Store(0)
	m.removed.Store(0)
	m.left.Store(0)
}

func (m *recordingManager) counts() (created, removed int) {
	return int(m.created.Load()), int(m.removed.Load())
}

func (m *recordingManager) Create(string, Limits) (ActionCgroup, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.created.Add(1)
	return &recordingCgroup{manager: m, joinErr: m.joinErr}, nil
}

func (*recordingManager) Close() error   { return nil }
func (*recordingManager) String() string { return "recording fake" }

type recordingCgroup struct {
	manager *recordingManager
	joinErr error
}

func (c *recordingCgroup) Join(int) error     { return c.joinErr }
func (c *recordingCgroup) Leave(int) error    { c.manager.left.Add(1); return nil }
func (c *recordingCgroup) Stats() CgroupStats { return CgroupStats{} }
func (c *recordingCgroup) Remove() error      { c.manager.removed.Add(1); return nil }
