package sandbox

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// i386ProbeName is the GOARCH=386 build of testdata/i386probe that
// scripts/test.sh puts in BITZEL_BIN_DIR (the rootless run has no Go);
// without BITZEL_BIN_DIR the test builds it.
const i386ProbeName = "seccomp-i386-probe"

func i386Probe(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("BITZEL_BIN_DIR"); dir != "" {
		path := filepath.Join(dir, i386ProbeName)
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("BITZEL_BIN_DIR has no %s (scripts/test.sh builds it): %v", i386ProbeName, err)
		}
		return path
	}
	path := filepath.Join(t.TempDir(), i386ProbeName)
	build := exec.Command("go", "build", "-o", path, "./testdata/i386probe")
	build.Env = append(os.Environ(), "GOARCH=386", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the i386 probe: %v\n%s", err, out)
	}
	return path
}

// TestSeccompCoversI386: a 32-bit binary runs under the default filter
// (it was killed when the filter refused every foreign ABI call,
// exit_group included) and meets the same denials as a native one, by
// its ABI's numbers; each mode's relaxations hold for it too.
func TestSeccompCoversI386(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("i386 is the compat ABI of amd64 only (GOARCH %s)", runtime.GOARCH)
	}
	probe, err := os.ReadFile(i386Probe(t))
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, e *env) map[string]string {
		t.Helper()
		layer := e.dir("layers/i386")
		if err := os.WriteFile(filepath.Join(layer, "probe"), probe, 0o755); err != nil {
			t.Fatal(err)
		}
		e.ownLayer(layer)
		o := e.run(&Spec{Mounts: []Mount{e.mount("", layer)}, Argv: []string{"./probe"}})
		if o.ExitCode != 0 || !strings.HasPrefix(o.stdout, "hello from i386\n") {
			t.Fatalf("the i386 probe: exit %d (signal %v)\nstdout: %s\nstderr: %s", o.ExitCode, o.Signal, o.stdout, o.stderr)
		}
		results := map[string]string{}
		for _, line := range lines(o.stdout)[1:] {
			name, result, _ := strings.Cut(line, " ")
			results[name] = result
		}
		return results
	}
	check := func(t *testing.T, mode SeccompMode, results, want map[string]string) {
		t.Helper()
		for name, result := range want {
			if results[name] != result {
				t.Errorf("%s: i386 %s: %s, want %s (all: %v)", mode, name, results[name], result, results)
			}
		}
	}
	forEachUserNamespaceMode(t, func(t *testing.T, configure func(*Config)) {
		check(t, SeccompDefault, run(t, newEnv(t, configure)), map[string]string{
			"getpid": "ok", "add_key": "EPERM", "keyctl": "EPERM", "unshare_user": "EPERM",
			"clone_user": "EPERM", "clone3": "ENOSYS", "io_uring_setup": "EPERM",
		})
	})
	// The kernel's own answers where a mode allows a call: the probe
	// tells the filter's denials from them.
	e := newEnv(t, func(c *Config) { c.Seccomp = SeccompAllowUserNamespaces })
	check(t, SeccompAllowUserNamespaces, run(t, e), map[string]string{
		"add_key": "EPERM", "keyctl": "EPERM", "unshare_user": "EINVAL", "clone_user": "EINVAL", "clone3": "EINVAL",
	})
	e = newEnv(t, func(c *Config) { c.Seccomp = SeccompOff })
	check(t, SeccompOff, run(t, e), map[string]string{
		"add_key": "ok", "keyctl": "ok", "unshare_user": "EINVAL", "io_uring_setup": "EFAULT",
	})
}

// TestSeccompFilterByABI runs the compiled filter in x/net/bpf's
// interpreter over seccomp_data of each ABI, the ones no binary here
// can exercise (x32, another architecture) included.
func TestSeccompFilterByABI(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("the ABIs checked are amd64's (GOARCH %s)", runtime.GOARCH)
	}
	encoded, err := compileSeccomp(SeccompDefault)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(decodeFilter(t, encoded))
	if err != nil {
		t.Fatal(err)
	}
	const auditArchAArch64 = 0xc00000b7
	errno := func(e unix.Errno) uint32 { return uint32(seccomp.ActionErrno) | uint32(e) }
	allow := uint32(seccomp.ActionAllow)
	x86_64, i386 := uint32(arch.X86_64.ID), uint32(arch.I386.ID)
	for _, c := range []struct {
		what     string
		arch, nr uint32
		arg0     uint64
		want     uint32
	}{
		{"x86-64 getpid", x86_64, unix.SYS_GETPID, 0, allow},
		{"x86-64 keyctl", x86_64, unix.SYS_KEYCTL, 0, errno(unix.EPERM)},
		{"x86-64 unshare(CLONE_NEWUSER)", x86_64, unix.SYS_UNSHARE, unix.CLONE_NEWUSER, errno(unix.EPERM)},
		{"x86-64 unshare(CLONE_NEWNS)", x86_64, unix.SYS_UNSHARE, unix.CLONE_NEWNS, allow},
		{"x32 getpid", x86_64, 0x40000000 | 39, 0, errno(unix.ENOSYS)},
		{"x32 keyctl", x86_64, 0x40000000 | 250, 0, errno(unix.ENOSYS)},
		{"i386 getpid", i386, 20, 0, allow},
		{"i386 keyctl", i386, 288, 0, errno(unix.EPERM)},
		{"i386 add_key", i386, 286, 0, errno(unix.EPERM)},
		{"i386 clock_settime64", i386, 404, 0, errno(unix.EPERM)},
		{"i386 mount", i386, 21, 0, errno(unix.EPERM)},
		{"i386 clone(CLONE_NEWUSER)", i386, 120, unix.CLONE_NEWUSER, errno(unix.EPERM)},
		{"i386 clone(SIGCHLD)", i386, 120, uint64(unix.SIGCHLD), allow},
		{"i386 unshare(CLONE_NEWUSER)", i386, 310, unix.CLONE_NEWUSER, errno(unix.EPERM)},
		{"i386 clone3", i386, 435, 0, errno(unix.ENOSYS)},
		{"aarch64 getpid", auditArchAArch64, 172, 0, errno(unix.ENOSYS)},
	} {
		got, err := vm.Run(seccompData(c.nr, c.arch, c.arg0))
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if uint32(got) != c.want {
			t.Errorf("%s: %#x, want %#x", c.what, uint32(got), c.want)
		}
	}
}

// seccompData is a struct seccomp_data as the kernel lays it out, with
// each 32-bit word turned big-endian: x/net/bpf's interpreter loads
// packets in network order, the kernel seccomp_data in native order.
func seccompData(nr, auditArch uint32, arg0 uint64) []byte {
	native := make([]byte, 64)
	binary.NativeEndian.PutUint32(native[0:], nr)
	binary.NativeEndian.PutUint32(native[4:], auditArch)
	binary.NativeEndian.PutUint64(native[16:], arg0)
	words := make([]byte, len(native))
	for i := 0; i < len(native); i += 4 {
		binary.BigEndian.PutUint32(words[i:], binary.NativeEndian.Uint32(native[i:]))
	}
	return words
}
