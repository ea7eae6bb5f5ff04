package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/internal/procfs"
)

// server is a running `bitzel-worker serve` on free loopback ports
// with a fresh data directory.
type server struct {
	cmd     *exec.Cmd
	dataDir string
	address string
	metrics string // host:port of /metrics
	exited  chan struct{}
	log     *os.File
}

var (
	servingRE = regexp.MustCompile(`serving REAPI on (\S+)`)
	metricsRE = regexp.MustCompile(`metrics on (\S+)`)
)

func startServer(binDir, workDir string, extra ...string) (*server, error) {
	dataDir, err := os.MkdirTemp(workDir, "serve-data-")
	if err != nil {
		return nil, err
	}
	// A root worker's actions run as unprivileged ids that must reach
	// the caches.
	os.Chmod(dataDir, 0o755)
	log, err := os.Create(filepath.Join(workDir, "serve.log"))
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", dataDir,
		"--cas-size", fmt.Sprint(int64(6) << 30), "--concurrency", fmt.Sprint(runtime.NumCPU())}, extra...)
	cmd := exec.Command(filepath.Join(binDir, "bitzel-worker"), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, dataDir: dataDir, exited: make(chan struct{}), log: log}
	ready := make(chan string, 1)
	metrics := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			line := scanner.Text()
			fmt.Fprintln(log, line)
			if m := metricsRE.FindStringSubmatch(line); m != nil {
				select {
				case metrics <- m[1]:
				default:
				}
			}
			if m := servingRE.FindStringSubmatch(line); m != nil {
				select {
				case ready <- m[1]:
				default:
				}
			}
		}
		io.Copy(log, stderr)
		cmd.Wait()
		close(s.exited)
	}()
	select {
	case s.address = <-ready:
		select {
		case s.metrics = <-metrics:
		default:
		}
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("serve exited at start-up; see %s", log.Name())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		return nil, fmt.Errorf("serve did not start; see %s", log.Name())
	}
}

// stop sends SIGTERM, waits for serve to drain and removes its data.
func (s *server) stop() {
	terminate(s.cmd, s.exited, 60*time.Second)
	s.log.Close()
	fsutil.RemoveAll(s.dataDir)
}

// processes are the server, its sandbox launcher and the sandboxes'
// PID 1s: what the issue counts as the worker's memory and CPU.
func (s *server) processes() []int {
	return withSandboxes(s.cmd.Process.Pid)
}

// withSandboxes adds to pids their sandbox launchers (children named
// bitzel-sandbox-launcher) and the launchers' children, the sandboxes'
// PID 1s. A PID 1 serves one action after another and is reaped only
// when it retires: its CPU (and that of the commands it reaped) is
// counted while it lives, and lands in the launcher's reaped time
// when it exits, so a difference of two readings counts it once.
func withSandboxes(pids ...int) []int {
	out := append([]int{}, pids...)
	for _, p := range pids {
		for _, launcher := range procfs.Children(p, "bitzel-sandbox-launcher") {
			out = append(out, launcher)
			out = append(out, procfs.Children(launcher, "bitzel-sandbox-init")...)
		}
	}
	return out
}

// rss is the resident memory of a set of processes, from
// /proc/PID/status: anonymous memory (heap, stacks: what would grow if
// the worker leaked) and file-backed pages (mostly the local CAS,
// which bb-storage maps into memory: page cache, reclaimable).
type rss struct{ total, anon, file int64 }

// readRSS sums the RSS of pids (a process that has gone counts 0).
func readRSS(pids []int) rss {
	var r rss
	for _, pid := range pids {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
			switch name {
			case "VmRSS":
				r.total += kb << 10
			case "RssAnon":
				r.anon += kb << 10
			case "RssFile", "RssShmem":
				r.file += kb << 10
			}
		}
	}
	return r
}

// cpuTime sums utime+stime+cutime+cstime of pids: their own CPU time
// and that of the children they reaped (the sandboxes).
func cpuTime(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		// A process gone since it was listed adds nothing.
		cpu, _ := procfs.CPUTime(pid)
		total += cpu
	}
	return total
}

func openFDs(pids []int) int {
	n := 0
	for _, pid := range pids {
		entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		n += len(entries)
	}
	return n
}

// goMetrics reads the Go runtime's figures from serve's /metrics:
// go_goroutines, and go_memstats_next_gc_bytes, the heap size at which
// the next collection starts (twice the heap that was live after the
// last one, with GOGC=100): a leak shows as a rising goal, garbage
// waiting for collection does not.
func goMetrics(address string) map[string]float64 {
	out := map[string]float64{}
	if address == "" {
		return out
	}
	c := http.Client{Timeout: 5 * time.Second}
	response, err := c.Get("http://" + address + "/metrics")
	if err != nil {
		return out
	}
	defer response.Body.Close()
	scanner := bufio.NewScanner(response.Body)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		name, value, ok := strings.Cut(scanner.Text(), " ")
		if !ok || !strings.HasPrefix(name, "go_") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// terminate sends cmd SIGTERM and waits until exited is closed,
// killing it after grace.
func terminate(cmd *exec.Cmd, exited <-chan struct{}, grace time.Duration) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-exited
	}
}
