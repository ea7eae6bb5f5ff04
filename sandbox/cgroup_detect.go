package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CgroupMode selects how limits are enforced.
type CgroupMode string

const (
	CgroupsAuto CgroupMode = "auto"
	CgroupsV1   CgroupMode = "v1"
	CgroupsV2   CgroupMode = "v2"
	CgroupsNone CgroupMode = "none"
)

// DetectCgroups finds a hierarchy the worker may manage: v2 when its
// cgroup is delegated with the memory, pids and cpu controllers, else
// v1 when running as root on a host that mounts those controllers
// there. It returns nil and the reason when there is neither; the
// worker then runs without cgroup limits and says so once.
func DetectCgroups(mode CgroupMode, name string) (CgroupManager, error) {
	if mode == CgroupsNone {
		return nil, errors.New("cgroups disabled by configuration")
	}
	mounts, own, err := readSelfCgroups()
	if err != nil {
		return nil, err
	}
	var reasons []string
	if mode == CgroupsAuto || mode == CgroupsV2 {
		m, err := detectV2(mounts["cgroup2"], own[""], name)
		if err == nil {
			return m, nil
		}
		reasons = append(reasons, "v2: "+err.Error())
	}
	if mode == CgroupsAuto || mode == CgroupsV1 {
		if os.Geteuid() != 0 {
			reasons = append(reasons, "v1: only root may manage v1 hierarchies")
		} else {
			m, err := NewCgroupV1Manager(mounts, own, name)
			if err == nil {
				return m, nil
			}
			reasons = append(reasons, err.Error())
		}
	}
	return nil, errors.New(strings.Join(reasons, "; "))
}

func detectV2(mount, ownPath, name string) (CgroupManager, error) {
	if mount == "" {
		return nil, errors.New("no cgroup2 hierarchy is mounted")
	}
	base := filepath.Join(mount, ownPath)
	controllers, err := os.ReadFile(filepath.Join(base, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	for _, want := range []string{"memory", "pids", "cpu"} {
		if !strings.Contains(" "+strings.TrimSpace(string(controllers))+" ", " "+want+" ") {
			return nil, fmt.Errorf("%s does not offer the %s controller", base, want)
		}
	}
	// cgroup v2 allows no processes in a group that delegates
	// controllers, so the worker moves itself to a leaf first, as a
	// systemd Delegate=yes service does.
	if procs, err := os.ReadFile(filepath.Join(base, "cgroup.procs")); err == nil && len(strings.TrimSpace(string(procs))) > 0 {
		leaf := filepath.Join(base, "worker")
		if err := os.MkdirAll(leaf, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup is not delegated: %w", err)
		}
		if err := writeCgroupFile(leaf, "cgroup.procs", fmt.Sprint(os.Getpid())); err != nil {
			return nil, fmt.Errorf("cgroup is not delegated: %w", err)
		}
	}
	if err := writeCgroupFile(base, "cgroup.subtree_control", "+memory +pids +cpu"); err != nil {
		return nil, err
	}
	leftovers := removeDeadWorkerGroups(base, name)
	parent := filepath.Join(base, fmt.Sprintf("%s-%d", name, os.Getpid()))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	m, err := NewCgroupV2Manager(parent)
	if err != nil {
		removeCgroup(parent)
		return nil, err
	}
	m.(*cgroupV2).removeParent = true
	m.(*cgroupV2).leftovers = leftovers
	return m, nil
}

// readSelfCgroups reads where this process's cgroup hierarchies are
// mounted and which cgroup it is in within each.
func readSelfCgroups() (mounts, own map[string]string, err error) {
	if own, err = readOwnCgroups("/proc/self/cgroup"); err != nil {
		return nil, nil, err
	}
	if mounts, err = readCgroupMounts("/proc/self/mountinfo"); err != nil {
		return nil, nil, err
	}
	return mounts, own, nil
}

// readOwnCgroups maps each v1 controller to the worker's cgroup in its
// hierarchy, and "" to its v2 cgroup.
func readOwnCgroups(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	own := map[string]string{}
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		parts := strings.SplitN(scanner.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, controller := range strings.Split(parts[1], ",") {
			own[controller] = parts[2]
		}
	}
	return own, scanner.Err()
}

// readCgroupMounts maps each v1 controller, and "cgroup2", to where its
// hierarchy is mounted.
func readCgroupMounts(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mounts := map[string]string{}
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		// id parent major:minor root mountpoint options - fstype source superoptions
		fields := strings.Fields(scanner.Text())
		sep := -1
		for i, field := range fields {
			if field == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < sep+4 || fields[3] != "/" {
			continue
		}
		mountpoint, fstype := fields[4], fields[sep+1]
		switch fstype {
		case "cgroup2":
			if mounts["cgroup2"] == "" {
				mounts["cgroup2"] = mountpoint
			}
		case "cgroup":
			for _, option := range strings.Split(fields[sep+3], ",") {
				if mounts[option] == "" {
					mounts[option] = mountpoint
				}
			}
		}
	}
	return mounts, scanner.Err()
}
