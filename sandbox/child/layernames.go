package child

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// nameByDescriptor opens an overlay's directories and names each as
// /proc/self/fd/N. overlayfs resolves the names when it is configured
// and shows them as given in /proc/self/mountinfo: an action then sees
// descriptor numbers, not the worker's data directory. This works with
// mount(2) as with fsconfig, so no kernel needs the 6.13 FSCONFIG_SET_FD
// form of lowerdir+, and the names are short enough for many more
// layers to fit a legacy option page. The descriptors must stay open
// until the overlay is mounted; call the returned function then.
func nameByDescriptor(overlay *Mount) (*Mount, func(), error) {
	var fds []int
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	name := func(path string) (string, error) {
		fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", fmt.Errorf("open %q: %w", path, err)
		}
		fds = append(fds, fd)
		return "/proc/self/fd/" + strconv.Itoa(fd), nil
	}
	names := &Mount{Path: overlay.Path, Layers: make([]string, len(overlay.Layers))}
	var err error
	for i, lower := range overlay.Layers {
		if names.Layers[i], err = name(lower); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("lower layer: %w", err)
		}
	}
	if names.UpperDir, err = name(overlay.UpperDir); err == nil {
		names.WorkDir, err = name(overlay.WorkDir)
	}
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return names, closeAll, nil
}
