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
// action's cgroup is removed exactly once, no PID 1 of the run is
// left, and a returned Result's Released is closed once that is so.
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
		wantErr: "no/such/dir",
	}, {
		name: "the action runs",
		spec: func() *Spec {
			return &Spec{Mounts: []Mount{e.mount("", e.dir("layers/empty"))}, Argv: []string{"/bin/sh", "-c", "echo ran"}}
		},
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
			if err != nil && c.join == nil {
				// A reported error leaves PID 1's exit to the
				// background, as a result does.
				runner.exiting.Wait()
			}
			if _, inits := sandboxProcesses(t); len(inits) > 0 {
				t.Errorf("PID 1s %v left after the run", inits)
			}
			if created, removed := manager.counts(); created != 1 || removed != 1 {
				t.Errorf("%d cgroups created, %d removals: want one of each", created, removed)
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
}

func (m *recordingManager) reset(joinErr error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.joinErr = joinErr
	m.created.Store(0)
	m.removed.Store(0)
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
func (c *recordingCgroup) Stats() CgroupStats { return CgroupStats{} }
func (c *recordingCgroup) Remove() error      { c.manager.removed.Add(1); return nil }
