package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	// inotify-hog opens inotify instances until refused, records how
	// many it got in ./held (in its upper directory, where the test
	// reads it) and holds them until killed.
	moreHelpers["inotify-hog"] = func([]string) int {
		held := 0
		var refusal error
		for {
			if _, err := unix.InotifyInit1(unix.IN_CLOEXEC); err != nil {
				refusal = err
				break
			}
			held++
		}
		fmt.Println(held, refusal)
		if err := os.WriteFile("held.tmp", []byte(strconv.Itoa(held)), 0o644); err != nil {
			fmt.Println(err)
			return 1
		}
		if err := os.Rename("held.tmp", "held"); err != nil {
			fmt.Println(err)
			return 1
		}
		for {
			unix.Pause()
		}
	}
	moreHelpers["inotify-one"] = func([]string) int {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
		if err != nil {
			fmt.Println("refused:", err)
			return 0
		}
		unix.Close(fd)
		fmt.Println("ok")
		return 0
	}
}

// TestActionCannotExhaustInotifyForOthers: inotify instances are
// charged per user namespace and up the chain of owners, so an action
// that opens them until refused could leave none to the other actions
// and to the worker's own uid (host root when the worker runs as root).
// While such an action holds all it could get, another action and the
// worker must still get one, and the hog must have got fewer than the
// host's limit. With cgroups and without; as root and rootless. The
// opt-in shared user namespace keeps only the host's reserve, which is
// checked too.
func TestActionCannotExhaustInotifyForOthers(t *testing.T) {
	hostLimit := readIntFile(t, "/proc/sys/user/max_inotify_instances")
	modes := []struct {
		name      string
		cgroups   bool
		share     bool
		perAction bool
	}{
		{name: "no-cgroups", perAction: true},
		{name: "cgroups", cgroups: true, perAction: true},
		{name: "cgroups-shared-user-namespace", cgroups: true, share: true},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			configure := func(c *Config) { c.Slots = 2 }
			if mode.cgroups {
				manager, err := DetectCgroups(CgroupsAuto, "bitzel-test")
				if err != nil {
					if os.Geteuid() == 0 {
						t.Fatalf("running as root on a host with cgroups, but none usable: %v", err)
					}
					// An ordinary user has no cgroups here: the
					// worker runs without, as the first mode.
					return
				}
				configure = func(c *Config) { c.Slots, c.Cgroups, c.ShareUserNamespace = 2, manager, mode.share }
			}
			e := newEnv(t, configure)
			helper := e.helperLayer()
			hogMount := e.mount("", helper)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hogDone := make(chan struct{})
			var hogErr error
			go func() {
				defer close(hogDone)
				_, hogErr = e.runner.Run(ctx, &Spec{
					Mounts:     []Mount{hogMount},
					Argv:       []string{"./helper"},
					Env:        []string{helperEnv + "=inotify-hog"},
					StdoutPath: filepath.Join(e.base, "hog.stdout"),
					StderrPath: filepath.Join(e.base, "hog.stderr"),
				})
			}()
			held := filepath.Join(hogMount.UpperDir, "held")
			for {
				if _, err := os.Stat(held); err == nil {
					break
				}
				select {
				case <-hogDone:
					out, _ := os.ReadFile(filepath.Join(e.base, "hog.stdout"))
					t.Fatalf("the hog ended before holding its instances: %v, stdout %q", hogErr, out)
				case <-time.After(10 * time.Millisecond):
				}
			}
			got := readIntFile(t, held)
			// The hog holds what it got: the worker's uid and another
			// action must still get one.
			fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
			if err != nil {
				t.Errorf("the worker's own inotify_init1 while an action holds %d instances: %v", got, err)
			} else {
				unix.Close(fd)
			}
			other := e.run(&Spec{
				Mounts: []Mount{e.mount("", helper)},
				Argv:   []string{"./helper"},
				Env:    []string{helperEnv + "=inotify-one"},
			})
			if mode.perAction && other.stdout != "ok\n" {
				t.Errorf("another action while one holds %d instances: %q (stderr %q)", got, other.stdout, other.stderr)
			}
			cancel()
			<-hogDone
			if got < 1 || got >= hostLimit {
				t.Errorf("the hog got %d inotify instances, want at least 1 and fewer than the host's %d", got, hostLimit)
			}
			t.Logf("the hog got %d of the host's %d inotify instances; another action: %q", got, hostLimit, strings.TrimSpace(other.stdout))
		})
	}
}

func readIntFile(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}
