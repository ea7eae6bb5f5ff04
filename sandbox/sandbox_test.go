package sandbox

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/bitzel/bitzel-worker/internal/procfs"
)

// Helper modes of the test binary, run inside sandboxes the way Go's
// os/exec tests re-execute their own binary.
const helperEnv = "SANDBOX_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runHelper(mode string, args []string) int {
	switch mode {
	case "connect":
		conn, err := net.Dial("tcp", args[0])
		if err != nil {
			fmt.Println("refused:", err)
			return 0
		}
		conn.Close()
		fmt.Println("connected")
		return 0
	case "loopback":
		// Listen and connect inside: lo must be up.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println("listen:", err)
			return 1
		}
		defer l.Close()
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Write([]byte("pong"))
				c.Close()
			}
		}()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			fmt.Println("dial:", err)
			return 1
		}
		data, _ := io.ReadAll(c)
		fmt.Println(string(data))
		return 0
	case "hog":
		// Touch 512 MiB, a page at a time.
		var chunks [][]byte
		for i := 0; i < 512; i++ {
			chunk := make([]byte, 1<<20)
			for j := 0; j < len(chunk); j += 4096 {
				chunk[j] = 1
			}
			chunks = append(chunks, chunk)
		}
		fmt.Println("allocated", len(chunks), "MiB")
		return 0
	case "spawn":
		// Start up to 200 sleeping children; report how many started.
		started := 0
		var procs []*os.Process
		for i := 0; i < 200; i++ {
			p, err := os.StartProcess("/bin/sleep", []string{"sleep", "30"}, &os.ProcAttr{})
			if err != nil {
				break
			}
			procs = append(procs, p)
			started++
		}
		fmt.Println(started)
		for _, p := range procs {
			p.Kill()
			p.Wait()
		}
		return 0
	case "interfaces":
		ifaces, err := net.Interfaces()
		if err != nil {
			fmt.Println(err)
			return 1
		}
		for _, i := range ifaces {
			fmt.Printf("%s %v\n", i.Name, i.Flags&net.FlagUp != 0)
		}
		return 0
	}
	if helper, ok := moreHelpers[mode]; ok {
		return helper(args)
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// env is one test's directories: layers, upper and work dirs, output
// files, all under a base directory the mapped ids can search.
type env struct {
	t          *testing.T
	base       string
	runner     Runner
	n          int
	owner, grp int
}

func newEnv(t *testing.T, configure ...func(*Config)) *env {
	t.Helper()
	base, err := os.MkdirTemp("", "sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	// MkdirTemp makes 0700; a root worker's actions run as
	// unprivileged ids that must reach the layers.
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fsutil.RemoveAll(base); err != nil {
			t.Errorf("remove test dir: %v", err)
		}
	})
	// Like the worker, keep sandboxes warm (tests of the cold path
	// configure 0) and name the directory all layers and upper
	// directories are in (TestAnyPathWithTheDefaultDataRoot leaves it
	// out).
	config := Config{StateDir: filepath.Join(base, "state"), WarmSandboxes: 2, DataRoots: []string{base}}
	for _, c := range configure {
		c(&config)
	}
	runner, err := NewNamespaceRunner(config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runner.Close() })
	uid, gid := config.ActionRootIDs()
	return &env{t: t, base: base, runner: runner, owner: uid, grp: gid}
}

func (e *env) dir(name string) string {
	e.t.Helper()
	path := filepath.Join(e.base, name)
	if err := os.MkdirAll(path, 0o755); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// layer makes a layer directory holding files (name -> content).
func (e *env) layer(name string, files map[string]string) string {
	e.t.Helper()
	dir := e.dir("layers/" + name)
	for path, content := range files {
		full := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
	e.ownLayer(dir)
	return dir
}

// ownLayer gives a layer to the action's root, as the layer cache does.
func (e *env) ownLayer(dir string) {
	e.t.Helper()
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, e.owner, e.grp)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// helperLayer holds a copy of the test binary, to run helper modes.
func (e *env) helperLayer() string {
	e.t.Helper()
	dir := e.dir("layers/helper")
	self, err := os.Executable()
	if err != nil {
		e.t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "helper"), data, 0o755); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

// mount makes an overlay mount with fresh upper and work dirs.
func (e *env) mount(path string, layers ...string) Mount {
	e.n++
	return Mount{
		Path:     path,
		Layers:   layers,
		UpperDir: e.dir(fmt.Sprintf("upper%d", e.n)),
		WorkDir:  e.dir(fmt.Sprintf("work%d", e.n)),
	}
}

type outcome struct {
	*Result
	stdout, stderr string
}

// run runs a spec, filling in output files, and fails the test on a
// sandbox error.
func (e *env) run(spec *Spec) outcome {
	e.t.Helper()
	o, err := e.tryRun(spec)
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

func (e *env) tryRun(spec *Spec) (outcome, error) {
	e.t.Helper()
	e.n++
	if spec.StdoutPath == "" {
		spec.StdoutPath = filepath.Join(e.base, fmt.Sprintf("stdout%d", e.n))
		spec.StderrPath = filepath.Join(e.base, fmt.Sprintf("stderr%d", e.n))
	}
	if spec.Env == nil {
		spec.Env = []string{"PATH=/usr/bin:/bin"}
	}
	result, err := e.runner.Run(context.Background(), spec)
	if err != nil {
		return outcome{}, err
	}
	stdout, _ := os.ReadFile(spec.StdoutPath)
	stderr, _ := os.ReadFile(spec.StderrPath)
	return outcome{Result: result, stdout: string(stdout), stderr: string(stderr)}, nil
}

// shell runs a /bin/sh script on an exec root of the given layers.
func (e *env) shell(script string, layers ...string) outcome {
	e.t.Helper()
	if len(layers) == 0 {
		layers = []string{e.dir("layers/empty")}
	}
	return e.run(&Spec{Mounts: []Mount{e.mount("", layers...)}, Argv: []string{"/bin/sh", "-c", script}})
}

func (o outcome) expectExit(t *testing.T, code int) {
	t.Helper()
	if o.ExitCode != code {
		t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", o.ExitCode, code, o.stdout, o.stderr)
	}
}

func lines(s string) []string {
	return strings.Split(strings.TrimSpace(s), "\n")
}

// hostMounts is the host's mount table, to check nothing leaks out.
func hostMounts(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// sandboxProcesses lists this test process's sandbox launchers and the
// PID 1s they started (other test binaries may run sandboxes too).
func sandboxProcesses(t *testing.T) (launchers, inits []int) {
	t.Helper()
	launchers = procfs.Children(os.Getpid(), "bitzel-sandbox-launcher")
	for _, l := range launchers {
		inits = append(inits, procfs.Children(l, InitBinaryName)...)
	}
	return launchers, inits
}

// processesWithArgument lists host processes whose command line holds
// marker.
func processesWithArgument(t *testing.T, marker string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, entry := range entries {
		if entry.Name()[0] < '0' || entry.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), marker) {
			found = append(found, entry.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}

// TestAnActionTooLargeForPID1IsAnErrorSayingSo: an Action whose frame
// exceeds what PID 1 reads is refused with that reason (not "init
// exited without reporting"), and the runner goes on working. The
// worker's own limits (ARG_MAX for argv and environment) keep real
// actions far below it.
func TestAnActionTooLargeForPID1IsAnErrorSayingSo(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Slots, c.WarmSandboxes = 1, 0 })
	root := e.dir("layers/empty")
	pidNamespace := func() string {
		t.Helper()
		o := runReleased(t, e, &Spec{Mounts: []Mount{e.mount("", root)}, Argv: []string{"/bin/readlink", "/proc/self/ns/pid"}})
		return strings.TrimSpace(o.stdout)
	}
	before := pidNamespace()
	_, err := e.tryRun(&Spec{Mounts: []Mount{e.mount("", root)}, Argv: []string{"/bin/true", strings.Repeat("x", 65<<20)}})
	if err == nil || !strings.Contains(err.Error(), "send the action to init") || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a 65 MiB argument: %v", err)
	}
	// PID 1 was sent nothing: the same one serves the next action.
	if after := pidNamespace(); after != before {
		t.Errorf("the next action ran in another sandbox (%s, then %s): the untouched PID 1 was retired", before, after)
	}
}
