package sandbox

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A PID 1 serves one action after another (child/zygote.go). These
// tests are the next action's view of what an earlier one tried to
// leave behind: each runs an attack, then an observer, in a runner of
// one slot, and checks that the observer sees a clean sandbox. Every
// case also reports which PID 1 (pid namespace) served each action: a
// control case, with no attack, must see the observer served by the
// attacker's PID 1, or the attacks proved nothing.

func init() {
	// pid1-attack KIND changes something of PID 1 (and of its
	// threads) that a process of its uid may change without a
	// capability, then prints its own pid namespace.
	moreHelpers["pid1-attack"] = func(args []string) int {
		tids, _ := os.ReadDir("/proc/1/task")
		if err := pid1Attacks[args[0]](tids); err != nil {
			fmt.Println("attack failed:", err)
			return 1
		}
		printPIDNamespace()
		return 0
	}
	// observe prints what the action inherited, then its pid
	// namespace.
	moreHelpers["observe"] = func([]string) int {
		var nofile unix.Rlimit
		unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile)
		nice, _ := unix.Getpriority(unix.PRIO_PROCESS, 0)
		var cpus unix.CPUSet
		unix.SchedGetaffinity(0, &cpus)
		ioprio, _, _ := unix.RawSyscall(unix.SYS_IOPRIO_GET, 1, 0, 0)
		oom, _ := os.ReadFile("/proc/self/oom_score_adj")
		fmt.Printf("nofile %d/%d\nnice %d\ncpus %d\nioprio %d\noom_score_adj %s\n", nofile.Cur, nofile.Max, 20-nice, cpus.Count(), ioprio, strings.TrimSpace(string(oom)))
		printPIDNamespace()
		return 0
	}
}

func printPIDNamespace() {
	ns, _ := os.Readlink("/proc/self/ns/pid")
	fmt.Println("pidns", ns)
}

// nestedAttacks are made from a nested user namespace.
var nestedAttacks = map[string]bool{"nice": true, "affinity": true, "ioprio": true}

// pid1Attacks each change one attribute of PID 1 or of all its threads.
var pid1Attacks = map[string]func(tids []os.DirEntry) error{
	"none": func([]os.DirEntry) error { return nil },
	"rlimit": func([]os.DirEntry) error {
		return unix.Prlimit(1, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 64, Max: 64}, nil)
	},
	"nice": func(tids []os.DirEntry) error {
		return eachThread(tids, func(tid int) error { return unix.Setpriority(unix.PRIO_PROCESS, tid, 19) })
	},
	"affinity": func(tids []os.DirEntry) error {
		var one unix.CPUSet
		one.Set(0)
		return eachThread(tids, func(tid int) error { return unix.SchedSetaffinity(tid, &one) })
	},
	"ioprio": func(tids []os.DirEntry) error {
		const idleClass = 3 << 13
		return eachThread(tids, func(tid int) error {
			if _, _, errno := unix.RawSyscall(unix.SYS_IOPRIO_SET, 1, uintptr(tid), idleClass); errno != 0 {
				return errno
			}
			return nil
		})
	},
	"oom_score_adj": func([]os.DirEntry) error {
		return os.WriteFile("/proc/1/oom_score_adj", []byte("1000"), 0)
	},
}

func eachThread(tids []os.DirEntry, change func(int) error) error {
	for _, entry := range tids {
		tid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		// A thread that exited since the listing is no failure.
		if err := change(tid); err != nil && err != unix.ESRCH {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	return nil
}

// TestAnActionCannotChangeWhatItsPID1PassesOn: an action lowers what
// it may of its PID 1 (resource limits, OOM score; and, from a nested
// user namespace whose root has a full capability mask, which the
// filter allows in this mode, nice, CPU affinity and I/O priority of
// every thread); the next action of the slot must start with the
// defaults, served by a new PID 1. Without child/health.go's check the
// observer inherits every one of them.
func TestAnActionCannotChangeWhatItsPID1PassesOn(t *testing.T) {
	if n := cpuCount(); n < 2 {
		t.Skipf("the affinity case needs 2 CPUs, this machine has %d", n)
	}
	e := newEnv(t, func(c *Config) { c.Slots, c.WarmSandboxes, c.Seccomp = 1, 0, SeccompAllowUserNamespaces })
	helper := e.helperLayer()
	run := func(t *testing.T, mode string, args ...string) outcome {
		t.Helper()
		argv := append([]string{"./helper"}, args...)
		if len(args) > 0 && nestedAttacks[args[0]] {
			// The kernel lets a process change another's
			// scheduling only if that one's capabilities are a
			// subset of its own (cap_safe_nice): PID 1 has more
			// than an action, but not more than the root of a
			// user namespace the action makes.
			argv = append([]string{"/usr/bin/unshare", "-r"}, argv...)
		}
		return runReleased(t, e, &Spec{Mounts: []Mount{e.mount("", helper)}, Argv: argv, Env: []string{"PATH=/usr/bin:/bin", helperEnv + "=" + mode}})
	}
	clean := run(t, "observe")
	for _, attack := range []string{"none", "rlimit", "nice", "affinity", "ioprio", "oom_score_adj"} {
		t.Run(attack, func(t *testing.T) {
			attacker := run(t, "pid1-attack", attack)
			observer := run(t, "observe")
			attackerNS, observerNS := lastLine(attacker.stdout), lastLine(observer.stdout)
			if attack == "none" {
				if attackerNS != observerNS {
					t.Fatalf("no attack, yet the next action got another PID 1 (%s, then %s): the other cases prove nothing", attackerNS, observerNS)
				}
				return
			}
			if observer.stdout != strings.Replace(clean.stdout, lastLine(clean.stdout), observerNS, 1) {
				t.Errorf("after the %s attack the next action inherited:\n%s\nwant what a fresh sandbox has:\n%s", attack, observer.stdout, clean.stdout)
			}
			if attackerNS == observerNS {
				t.Errorf("the attacked PID 1 (%s) served the next action", attackerNS)
			}
		})
	}
}

// TestAnActionLeavesNothingForTheNext: what an action creates in its
// sandbox (System V shared memory, files in /tmp and /dev/shm, a
// process it detached) is gone for the next action of the same PID 1,
// and the template it shares with it (/dev, the root) is read-only.
func TestAnActionLeavesNothingForTheNext(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Slots, c.WarmSandboxes = 1, 0 })
	helper := e.helperLayer()
	run := func(script string) outcome {
		t.Helper()
		return runReleased(t, e, &Spec{Mounts: []Mount{e.mount("", helper)}, Argv: []string{"/bin/sh", "-c", script}})
	}
	first := run(`SANDBOX_TEST_HELPER=shm-create ./helper >/dev/null && echo left >/tmp/left && echo left >/dev/shm/left &&
(touch /dev/left 2>/dev/null && echo dev writable; touch /left 2>/dev/null && echo root writable;
 setsid sleep 100 </dev/null >/dev/null 2>&1 &) ; readlink /proc/self/ns/pid`)
	second := run(`ls /tmp /dev/shm; SANDBOX_TEST_HELPER=shm-find ./helper; ls /dev/left /left 2>/dev/null; pgrep -x sleep; readlink /proc/self/ns/pid`)
	if strings.Contains(first.stdout, "writable") {
		t.Errorf("the template is writable: %s", first.stdout)
	}
	if lastLine(first.stdout) != lastLine(second.stdout) {
		t.Fatalf("the second action got another PID 1 (%s, then %s): nothing was tested", lastLine(first.stdout), lastLine(second.stdout))
	}
	if want := "shm: not found\n" + lastLine(second.stdout) + "\n"; !strings.HasSuffix(second.stdout, want) || strings.Contains(second.stdout, "left") {
		t.Errorf("the next action sees what the first left:\n%s", second.stdout)
	}
}

func init() {
	const key = 0x62697a6c
	moreHelpers["shm-create"] = func([]string) int {
		if _, err := unix.SysvShmGet(key, 4096, unix.IPC_CREAT|0o600); err != nil {
			fmt.Println("shmget:", err)
			return 1
		}
		return 0
	}
	moreHelpers["shm-find"] = func([]string) int {
		if _, err := unix.SysvShmGet(key, 0, 0); err != nil {
			fmt.Println("shm: not found")
			return 0
		}
		fmt.Println("shm: found a segment left by an earlier action")
		return 0
	}
}

// runReleased runs spec, expects exit 0 and waits for the sandbox to
// release it: the next action takes this PID 1 only once it is back in
// the pool.
func runReleased(t *testing.T, e *env, spec *Spec) outcome {
	t.Helper()
	o, err := e.tryRun(spec)
	if err != nil {
		t.Fatal(err)
	}
	o.expectExit(t, 0)
	select {
	case <-o.Released:
	case <-time.After(10 * time.Second):
		t.Fatal("Released was not closed")
	}
	return o
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func cpuCount() int {
	var cpus unix.CPUSet
	unix.SchedGetaffinity(0, &cpus)
	return cpus.Count()
}

// TestPID1IsOutOfReach: an action sees its slot's PID 1 in /proc, and
// PID 1's mount namespace still binds the worker's data directories.
// Through /proc/1 the action must reach none of it: not PID 1's root or
// working directory, its descriptors, environment, memory or
// namespaces, for any of its threads. Two things refuse it, each
// enough: PID 1 is not dumpable, and the kernel lets a process of the
// same uid into another only if it holds every capability that one
// has (cap_ptrace_access_check), or CAP_SYS_PTRACE, which an action
// never has (kept, it fails this test). The numbers of PID 1's
// descriptors can be listed, as when PID 1 served a single action.
func TestPID1IsOutOfReach(t *testing.T) {
	e := newEnv(t)
	e.layer("secret", map[string]string{"key": "data root contents"})
	o := e.shell(`for t in /proc/1 /proc/1/task/*; do
  cat $t/root/.bitzel/data/0/layers/secret/key 2>/dev/null
  ls $t/root/ >/dev/null 2>&1 && echo "listed $t/root"
  ls $t/cwd/ >/dev/null 2>&1 && echo "listed $t/cwd"
  for f in environ maps mem auxv stack; do head -c1 $t/$f >/dev/null 2>&1 && echo "read $t/$f"; done
  for l in fd/0 fd/3 fd/4 ns/mnt ns/net ns/user exe; do readlink $t/$l >/dev/null 2>&1 && echo "followed $t/$l"; done
done; echo checked`)
	o.expectExit(t, 0)
	if o.stdout != "checked\n" {
		t.Errorf("through /proc/1 the action reached:\n%s", o.stdout)
	}
}

const leftPort = 40123

func init() {
	// net-hold leaves what a network namespace keeps after a process:
	// a connection to a listener on leftPort that the server side
	// closed first (TIME_WAIT on that port), then holds the listener,
	// a UDP socket and an abstract Unix socket until it is killed.
	moreHelpers["net-hold"] = func([]string) int {
		listener, err := boundSocket(unix.SOCK_STREAM, leftPort)
		if err == nil {
			err = unix.Listen(listener, 1)
		}
		client, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err == nil {
			err = unix.Connect(client, &unix.SockaddrInet4{Port: leftPort, Addr: [4]byte{127, 0, 0, 1}})
		}
		if err != nil {
			fmt.Println("net-hold:", err)
			return 1
		}
		server, _, err := unix.Accept(listener)
		if err != nil {
			fmt.Println("accept:", err)
			return 1
		}
		unix.Close(server)
		time.Sleep(10 * time.Millisecond)
		unix.Close(client)
		udp, _ := boundSocket(unix.SOCK_DGRAM, leftPort+1)
		abstract, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		unix.Bind(abstract, &unix.SockaddrUnix{Name: "@bitzel-left"})
		fmt.Println("holding", listener, udp, abstract)
		os.Stdout.Sync()
		for {
			unix.Pause()
		}
	}
	// net-check prints the sockets of the namespace, then binds what
	// net-hold held, without SO_REUSEADDR.
	moreHelpers["net-check"] = func([]string) int {
		sockstat, _ := os.ReadFile("/proc/self/net/sockstat")
		fmt.Println(strings.SplitN(string(sockstat), "\n", 2)[0])
		for _, kind := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM} {
			port := leftPort
			if kind == unix.SOCK_DGRAM {
				port++
			}
			if _, err := boundSocket(kind, port); err != nil {
				fmt.Printf("bind %d/%d: %v\n", kind, port, err)
			}
		}
		abstract, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err := unix.Bind(abstract, &unix.SockaddrUnix{Name: "@bitzel-left"}); err != nil {
			fmt.Println("bind @bitzel-left:", err)
		}
		printPIDNamespace()
		return 0
	}
	// net-reconfigure tries what CAP_NET_ADMIN in the namespace's
	// owner would allow, and prints what succeeded.
	moreHelpers["net-reconfigure"] = func([]string) int {
		if err := os.WriteFile("/proc/sys/net/ipv4/tcp_max_tw_buckets", []byte("1000"), 0); err == nil {
			fmt.Println("changed tcp_max_tw_buckets")
		}
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40001"), 0); err == nil {
			fmt.Println("changed ip_local_port_range")
		}
		fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		ifreq, _ := unix.NewIfreq("lo")
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifreq); err == nil {
			ifreq.SetUint16(ifreq.Uint16() &^ unix.IFF_UP)
			if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifreq); err == nil {
				fmt.Println("took lo down")
			}
		}
		fmt.Println("done")
		return 0
	}
}

// boundSocket is a socket of kind bound to 127.0.0.1:port, without
// SO_REUSEADDR (which Go's net package sets).
func boundSocket(kind, port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, kind, 0)
	if err != nil {
		return -1, err
	}
	return fd, unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
}

// TestAnActionLeavesNoSocketsForTheNext: the actions of a slot share
// its PID 1's network namespace (child/network.go). One leaves a
// listener, a UDP socket and an abstract Unix socket in a process the
// end of the action kills, and a TIME_WAIT connection on its listening
// port; the next action of the same PID 1 finds no socket and binds
// all three names without SO_REUSEADDR.
func TestAnActionLeavesNoSocketsForTheNext(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Slots, c.WarmSandboxes = 1, 0 })
	helper := e.helperLayer()
	first := runReleased(t, e, &Spec{Mounts: []Mount{e.mount("", helper)},
		Argv: []string{"/bin/sh", "-c", `SANDBOX_TEST_HELPER=net-hold ./helper & sleep 0.3; readlink /proc/self/ns/pid`}})
	if !strings.Contains(first.stdout, "holding") {
		t.Fatalf("the first action did not leave its sockets: %q (stderr %q)", first.stdout, first.stderr)
	}
	second := runReleased(t, e, &Spec{Mounts: []Mount{e.mount("", helper)}, Argv: []string{"./helper"}, Env: []string{helperEnv + "=net-check"}})
	if ns := strings.TrimPrefix(lastLine(second.stdout), "pidns "); ns != lastLine(first.stdout) {
		t.Fatalf("the next action ran in another sandbox (%s, then %s): nothing was tested", lastLine(first.stdout), ns)
	}
	if want := "sockets: used 0\n" + lastLine(second.stdout) + "\n"; second.stdout != want {
		t.Errorf("the next action of the same PID 1 found:\n%s", second.stdout)
	}
}

// TestAnActionCannotReconfigureTheNetwork: an action may not change
// the network namespace it shares with the later actions of its slot:
// not its sysctls, not its interface.
func TestAnActionCannotReconfigureTheNetwork(t *testing.T) {
	e := newEnv(t)
	o := e.run(&Spec{Mounts: []Mount{e.mount("", e.helperLayer())}, Argv: []string{"./helper"}, Env: []string{helperEnv + "=net-reconfigure"}})
	o.expectExit(t, 0)
	if o.stdout != "done\n" {
		t.Errorf("an action reconfigured its slot's network namespace:\n%s", o.stdout)
	}
}
