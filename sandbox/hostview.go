package sandbox

import (
	"fmt"
	"os"
	"strings"

	"github.com/bitzel/bitzel-worker/sandbox/child"
)

// UnixSocketExposure says which host paths the sandbox has to bind
// rather than present through an overlay, because something is mounted
// below them (child/hostview.go): pathname sockets under those can be
// connected to from an action. Empty when there are none.
func UnixSocketExposure(hostPaths []string) string {
	mountPoints, err := child.ReadMountPoints("/proc/self/mountinfo")
	if err != nil {
		return fmt.Sprintf("; cannot tell whether host Unix sockets are reachable: %v", err)
	}
	var exposed []string
	for _, path := range hostPaths {
		if info, err := os.Lstat(path); err != nil || !info.IsDir() {
			continue
		}
		if below := child.MountsBelow(mountPoints, path); len(below) > 0 {
			exposed = append(exposed, fmt.Sprintf("%s (mounts below it: %s)", path, strings.Join(below, ", ")))
		}
	}
	if len(exposed) == 0 {
		return ""
	}
	return "; bound, not overlaid, so Unix sockets under them are reachable from actions: " + strings.Join(exposed, "; ")
}
