package procfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestChildrenAndCPUTime(t *testing.T) {
	// A child named by argv[0], busy for a while so that it has CPU
	// time of its own.
	cmd := exec.Command("/bin/sh", "-c", `i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 5`)
	cmd.Args[0] = "procfs-test-child"
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var cpu time.Duration
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var err error
		if cpu, err = CPUTime(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		if cpu > 0 {
			break
		}
	}
	if cpu <= 0 {
		t.Errorf("a busy child shows CPU time %v", cpu)
	}
	got := Children(os.Getpid(), "procfs-test-child")
	if len(got) != 1 || got[0] != cmd.Process.Pid {
		t.Errorf("Children = %v, want [%d]", got, cmd.Process.Pid)
	}
	if got := Children(os.Getpid(), filepath.Base(os.Args[0])+"-not"); len(got) != 0 {
		t.Errorf("Children of an unused name = %v", got)
	}
	if _, err := CPUTime(-1); err == nil {
		t.Error("CPUTime of no process did not fail")
	}
}

func TestCPUTimesTellsOwnFromReaped(t *testing.T) {
	// The busy loop runs in a grandchild that the child waits for:
	// its CPU time is the child's reaped time, not its own.
	cmd := exec.Command("/bin/sh", "-c", `/bin/sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'; exec sleep 5`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var own, reaped time.Duration
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var err error
		if own, reaped, err = CPUTimes(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		if reaped > 0 && Name(cmd.Process.Pid) == "sleep" {
			break
		}
	}
	if reaped <= own {
		t.Errorf("own %v, reaped %v: the busy grandchild's time must be reaped time", own, reaped)
	}
	if total, err := CPUTime(cmd.Process.Pid); err != nil || total < own+reaped {
		t.Errorf("CPUTime = %v, %v; want at least own+reaped = %v", total, err, own+reaped)
	}
	// comm follows the exec: the child is now sleep.
	if name := Name(cmd.Process.Pid); name != "sleep" {
		t.Errorf("Name = %q, want sleep", name)
	}
	if name := Name(-1); name != "" {
		t.Errorf("Name of no process = %q", name)
	}
}
