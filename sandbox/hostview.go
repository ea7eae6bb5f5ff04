package sandbox

import (
	"fmt"
	"os"
	"strings"

	"github.com/bitzel/bitzel-worker/sandbox/child"
)

// HostTreesRebuilt names the host paths that have something mounted
// below them and that every sandbox therefore rebuilds entry by entry
// rather than overlaying whole (child/hostrebuild.go): a mount each per
// directory and file on the way, paid when a sandbox is prepared.
// Empty when there are none.
func HostTreesRebuilt(hostPaths []string) string {
	mountPoints, err := child.ReadMountPoints("/proc/self/mountinfo")
	if err != nil {
		return fmt.Sprintf("; cannot read the host's mounts: %v", err)
	}
	var rebuilt []string
	for _, path := range hostPaths {
		if info, err := os.Lstat(path); err != nil || !info.IsDir() {
			continue
		}
		if below := child.MountsBelow(mountPoints, path); len(below) > 0 {
			rebuilt = append(rebuilt, fmt.Sprintf("%s (mounts below it: %s)", path, strings.Join(below, ", ")))
		}
	}
	if len(rebuilt) == 0 {
		return ""
	}
	return "; host trees rebuilt entry by entry, their sockets, FIFOs and devices left out: " + strings.Join(rebuilt, "; ")
}
