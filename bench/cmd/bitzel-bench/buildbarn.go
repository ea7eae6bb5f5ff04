package main

// `bitzel-bench buildbarn`: the same distinct /bin/true actions through
// three stacks, interleaved round by round in one run:
//   - all-Buildbarn: bb_storage + bb_scheduler + bb_worker + bb_runner
//     (native build directory, no sandbox), the yardstick;
//   - the bitzel cluster: `bitzel-worker worker` (configs/worker.jsonnet,
//     full sandbox) behind the same bb_storage + bb_scheduler;
//   - `bitzel-worker serve` on its own.
// Both workers are registered at once under different platforms, so
// the scheduler routes each action to the side it was made for, and
// each side's CPU is read only while it runs.

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	"github.com/bitzel/bitzel-worker/internal/testsupport"
	"github.com/buildbarn/bb-storage/pkg/digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// peerNames are the hand-built Buildbarn binaries the -peers folder
// holds.
var peerNames = []string{"bb_storage", "bb_scheduler", "bb_worker", "bb_runner"}

// missingPeers lists the peers absent from dir (or not executable).
func missingPeers(dir string) []string {
	var missing []string
	for _, name := range peerNames {
		if dir == "" {
			missing = append(missing, name)
			continue
		}
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	return missing
}

// missingPeersMessage says what cannot run without the missing peers;
// empty when nothing is missing.
func missingPeersMessage(dir string, missing []string) string {
	if len(missing) == 0 {
		return ""
	}
	where := "no -peers folder given"
	if dir != "" {
		where = "not in " + dir
	}
	has := map[string]bool{}
	for _, m := range missing {
		has[m] = true
	}
	var skipped []string
	if has["bb_storage"] || has["bb_scheduler"] {
		skipped = append(skipped, "all-Buildbarn and the bitzel cluster (both need bb_storage and bb_scheduler)")
	} else if has["bb_worker"] || has["bb_runner"] {
		skipped = append(skipped, "all-Buildbarn (needs bb_worker and bb_runner)")
	}
	return fmt.Sprintf("missing peer binaries: %s (%s; build them by hand from bb-storage and bb-remote-execution, see BENCHMARKS.md); skipping %s; running the rest",
		strings.Join(missing, ", "), where, strings.Join(skipped, ", "))
}

// Routing: each cluster worker serves one platform.
const benchPlatformProperty = "bitzel-bench-side"

func sidePlatform(value string) *remoteexecution.Platform {
	return &remoteexecution.Platform{Properties: []*remoteexecution.Platform_Property{{Name: benchPlatformProperty, Value: value}}}
}

// clusterConfigs are the generated configuration files of one run.
type clusterConfigs struct {
	dir                                        string
	bbStorage, bbScheduler, bbWorker, bbRunner string
	bitzelWorker                               string
	runnerSocket                               string
}

// writeClusterConfigs writes the configurations into dir: bb_storage,
// bb_scheduler and the bitzel worker are the repository's configs/
// files, imported unchanged except for cluster.libsonnet's worker data
// directory (under dir) and the bitzel runner's platform; bb_worker and
// bb_runner are written here (native build directory, 2 slots, as in
// BENCHMARKS.md's manual figures). Addresses are configs/cluster.libsonnet's:
// the run has a network namespace of its own.
func writeClusterConfigs(configsDir, dir, variant string) (*clusterConfigs, error) {
	if strings.TrimSpace(variant) == "" {
		variant = "{}"
	}
	configsDir, err := filepath.Abs(configsDir)
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"cluster.libsonnet", "bb_storage.jsonnet", "bb_scheduler.jsonnet", "worker.jsonnet"} {
		if _, err := os.Stat(filepath.Join(configsDir, name)); err != nil {
			return nil, fmt.Errorf("configs folder %s: %w", configsDir, err)
		}
	}
	c := &clusterConfigs{
		dir:          dir,
		bbStorage:    filepath.Join(dir, "bb_storage.jsonnet"),
		bbScheduler:  filepath.Join(dir, "bb_scheduler.jsonnet"),
		bbWorker:     filepath.Join(dir, "bb_worker.jsonnet"),
		bbRunner:     filepath.Join(dir, "bb_runner.jsonnet"),
		bitzelWorker: filepath.Join(dir, "bitzel_worker.jsonnet"),
		runnerSocket: filepath.Join(dir, "bb", "runner"),
	}
	for _, d := range []string{"bb/build", "bb/cache", "bitzel"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	q := func(s string) string { return fmt.Sprintf("%q", s) } // a Jsonnet string
	files := map[string]string{
		// For bb_worker.jsonnet's addresses (configs/ files
		// importing 'cluster.libsonnet' get the original, from
		// their own folder).
		"cluster.libsonnet": fmt.Sprintf("(import %s) + {\n  workerDataDirectory(index):: %s + '/bitzel/worker-%%d' %% index,\n}\n",
			q(filepath.Join(configsDir, "cluster.libsonnet")), q(dir)),
		"bb_storage.jsonnet":   fmt.Sprintf("import %s\n", q(filepath.Join(configsDir, "bb_storage.jsonnet"))),
		"bb_scheduler.jsonnet": fmt.Sprintf("import %s\n", q(filepath.Join(configsDir, "bb_scheduler.jsonnet"))),
		// Worker 0 is configs/worker.jsonnet as it is; worker 1
		// (the variant side, when asked for) the same with variant
		// merged in. Both keep their data under dir.
		"bitzel_worker.jsonnet": fmt.Sprintf(`local index = std.parseInt(std.extVar('BITZEL_WORKER_INDEX'));
local base = (import %s) + (if index == 1 then %s else {}) + { executor+: { dataDirectoryPath: %s + '/bitzel/worker-%%d' %% index } };
base + { runners: [base.runners[0] + { platform: { properties: [{ name: %s, value: if index == 1 then 'bitzel-variant' else 'bitzel' }] } }] }
`, q(filepath.Join(configsDir, "worker.jsonnet")), variant, q(dir), q(benchPlatformProperty)),
		"bb_worker.jsonnet": fmt.Sprintf(`local cluster = import 'cluster.libsonnet';
{
  blobstore: {
    contentAddressableStorage: { grpc: { client: { address: cluster.storageAddress } } },
    actionCache: { grpc: { client: { address: cluster.storageAddress } } },
  },
  maximumMessageSizeBytes: 16 * 1024 * 1024,
  scheduler: { address: cluster.schedulerWorkerAddress },
  browserUrl: 'http://127.0.0.1:7984',
  buildDirectories: [{
    native: {
      buildDirectoryPath: %[1]s + '/bb/build',
      cacheDirectoryPath: %[1]s + '/bb/cache',
      maximumCacheFileCount: 100000,
      maximumCacheSizeBytes: 1024 * 1024 * 1024,
      cacheReplacementPolicy: 'LEAST_RECENTLY_USED',
    },
    runners: [{
      endpoint: { address: 'unix://' + %[2]s },
      concurrency: 2,
      instanceNamePrefix: '',
      platform: { properties: [{ name: %[3]s, value: 'bb_worker' }] },
      workerId: { host: 'localhost', worker: 'bb' },
    }],
  }],
  filePool: { blockDevice: { file: { path: %[1]s + '/bb/filepool', sizeBytes: 1024 * 1024 * 1024 } } },
  outputUploadConcurrency: 11,
  inputDownloadConcurrency: 11,
  directoryCache: { maximumCount: 1000, maximumSizeBytes: 1000 * 1024, cacheReplacementPolicy: 'LEAST_RECENTLY_USED' },
  global: { diagnosticsHttpServer: { httpServers: [{ listenAddresses: ['127.0.0.1:9990'], authenticationPolicy: { allow: {} } }], enablePrometheus: true, enablePprof: true } },
}
`, q(dir), q(c.runnerSocket), q(benchPlatformProperty)),
		"bb_runner.jsonnet": fmt.Sprintf(`{
  buildDirectoryPath: %s + '/bb/build',
  grpcServers: [{ listenPaths: [%s], authenticationPolicy: { allow: {} } }],
}
`, q(dir), q(c.runnerSocket)),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// peerProcess is one server of a stack.
type peerProcess struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
}

func startPeer(name, binary, logDir string, env []string, args ...string) (*peerProcess, error) {
	log, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &peerProcess{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); log.Close(); close(p.exited) }()
	return p, nil
}

func (p *peerProcess) stop() { terminate(p.cmd, p.exited, 30*time.Second) }

// waitFor waits until address ("unix:PATH" or host:port) accepts
// connections, or p exits.
func waitFor(p *peerProcess, network, address string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout(network, address, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited at start-up (see its log)", p.name)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not listen on %s", p.name, address)
}

// benchSide is one stack as the client sees it.
type benchSide struct {
	name     string
	ep       *endpoint
	platform *remoteexecution.Platform
	pids     func() []int
	// rpcServers are the diagnostics addresses of the Buildbarn
	// servers the side's worker talks to, whose calls per action the
	// run line shows.
	rpcServers map[string]string
	seq        int
}

func (s *benchSide) actions(n int) ([]digest.Digest, error) {
	b := blobs{}
	out := make([]digest.Digest, n)
	for i := range out {
		s.seq++
		out[i] = s.ep.action(b, command{args: []string{"/bin/true"}, platform: s.platform, env: map[string]string{"BENCH_SIDE": s.name}}, s.seq)
	}
	return out, s.ep.upload(context.Background(), b)
}

// clusterDiagnostics are the diagnostics servers of bb_storage and
// bb_scheduler, as configs/bb_storage.jsonnet and bb_scheduler.jsonnet
// place them (cluster.diagnosticsListenAddress).
var clusterDiagnostics = map[string]string{"bb_storage": "127.0.0.1:9980", "bb_scheduler": "127.0.0.1:9982"}

type bbMeasurement struct {
	round, clients int
	side           string
	rate           float64 // actions/s
	cpuPerAction   time.Duration
	load           string
	stages         stageMedians
}

// bbOptions are the flags of `bitzel-bench buildbarn`.
type bbOptions struct {
	peers, binDir, configsDir, workDir, clients, outDir string
	variantBin, variantConfig                           string
	sides                                               string
	rounds, perLevel                                    int
	netns                                               bool
}

func parseBuildbarnFlags(args []string) (*bbOptions, error) {
	o := &bbOptions{}
	fs := flag.NewFlagSet("buildbarn", flag.ContinueOnError)
	fs.StringVar(&o.peers, "peers", "", "`folder` of hand-built bb_storage, bb_scheduler, bb_worker, bb_runner")
	fs.StringVar(&o.binDir, "bin", "bin", "`folder` holding bitzel-worker and bitzel-sandbox-init")
	fs.StringVar(&o.configsDir, "configs", "configs", "the repository's configs/ `folder`")
	fs.StringVar(&o.workDir, "work", "", "scratch `folder` (default: a new one under $TMPDIR, removed after)")
	fs.IntVar(&o.rounds, "rounds", 3, "interleaved rounds")
	fs.StringVar(&o.clients, "clients", "1,16", "client counts")
	fs.IntVar(&o.perLevel, "actions", 400, "actions per side, client count and round")
	fs.StringVar(&o.outDir, "out", "bench/out", "`folder` for buildbarn.md")
	fs.StringVar(&o.variantBin, "variant-bin", "", "also run a second bitzel cluster worker from this `folder` of binaries (e.g. the commit before a change), interleaved")
	fs.StringVar(&o.variantConfig, "variant-config", "", "also run a second bitzel cluster worker with this Jsonnet `object` merged into configs/worker.jsonnet (e.g. \"{ executor+: { sandbox+: { memoryLimitBytes: 0 } } }\")")
	fs.StringVar(&o.sides, "sides", "", "measure only these sides, comma-separated names as printed (e.g. \"bitzel cluster\"); all are started and warmed up (default: all)")
	fs.BoolVar(&o.netns, "netns", true, "re-run inside `unshare -n` (a network namespace of its own: fixed ports, nothing reachable from outside)")
	if err := parseSubcommandFlags(fs, args); err != nil {
		return nil, err
	}
	return o, nil
}

func buildbarnMain(args []string) error {
	o, err := parseBuildbarnFlags(args)
	if err != nil {
		return err
	}
	if o.netns && os.Getenv("BITZEL_BENCH_NETNS") == "" {
		return reexecSubcommandInNetns("buildbarn", args)
	}
	work := o.workDir
	if work == "" {
		if work, err = os.MkdirTemp("", "bitzel-bench-bb-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	work, _ = filepath.Abs(work)
	os.Chmod(work, 0o755)
	bin, err := filepath.Abs(o.binDir)
	if err != nil {
		return err
	}
	missing := missingPeers(o.peers)
	if msg := missingPeersMessage(o.peers, missing); msg != "" {
		fmt.Fprintln(os.Stderr, msg)
	}
	procs := &peerSet{work: work}
	defer procs.stopAll()
	procs.stopOnSignal(o.workDir == "")
	sides, err := startClusterSides(o, procs, bin, work, missing)
	if err != nil {
		return err
	}
	s0, err := startServer(bin, work, "--concurrency=2")
	if err != nil {
		return err
	}
	procs.setServer(s0)
	defer s0.stop()
	serveEP, err := dial(s0.address)
	if err != nil {
		return err
	}
	sides = append(sides, &benchSide{name: "serve", ep: serveEP, pids: s0.processes})
	if err := warmUp(sides); err != nil {
		return err
	}
	if sides, err = selectSides(sides, o.sides); err != nil {
		return err
	}
	results, err := measureRounds(sides, o.rounds, intList(o.clients), o.perLevel)
	if err != nil {
		return err
	}
	md := buildbarnMarkdown(results, sides, missing)
	fmt.Print(md)
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.outDir, "buildbarn.md"), []byte(md), 0o644)
}

// selectSides keeps the sides named in list (all when it is empty), so
// that a profile taken during the run sees one side's processes only.
func selectSides(sides []*benchSide, list string) ([]*benchSide, error) {
	if list == "" {
		return sides, nil
	}
	var kept []*benchSide
	for _, name := range strings.Split(list, ",") {
		found := false
		for _, s := range sides {
			if s.name == strings.TrimSpace(name) {
				kept = append(kept, s)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("-sides: no side is named %q", name)
		}
	}
	return kept, nil
}

// peerSet is every server the harness started: each is stopped on the
// way out, an interrupted run included (their data is in work).
type peerSet struct {
	work    string
	lock    sync.Mutex
	started []*peerProcess
	srv     *server
}

func (ps *peerSet) start(name, binary string, env []string, args ...string) (*peerProcess, error) {
	p, err := startPeer(name, binary, ps.work, env, args...)
	if err == nil {
		ps.lock.Lock()
		ps.started = append(ps.started, p)
		ps.lock.Unlock()
	}
	return p, err
}

func (ps *peerSet) setServer(s *server) {
	ps.lock.Lock()
	ps.srv = s
	ps.lock.Unlock()
}

func (ps *peerSet) stopAll() {
	ps.lock.Lock()
	defer ps.lock.Unlock()
	for i := len(ps.started) - 1; i >= 0; i-- {
		ps.started[i].stop()
	}
	ps.started = nil
}

// stopOnSignal stops everything (and removes the scratch folder when
// the harness made it) on SIGINT or SIGTERM, and exits.
func (ps *peerSet) stopOnSignal(removeWork bool) {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		fmt.Fprintln(os.Stderr, "bitzel-bench buildbarn: interrupted")
		ps.lock.Lock()
		if ps.srv != nil {
			ps.srv.stop()
		}
		ps.lock.Unlock()
		ps.stopAll()
		if removeWork {
			os.RemoveAll(ps.work)
		}
		os.Exit(130)
	}()
}

// startClusterSides starts bb_storage and bb_scheduler, and behind
// them all-Buildbarn (bb_worker + bb_runner), the bitzel cluster worker
// and its variant, as far as the peers are there.
func startClusterSides(o *bbOptions, procs *peerSet, bin, work string, missing []string) ([]*benchSide, error) {
	has := func(name string) bool {
		for _, m := range missing {
			if m == name {
				return false
			}
		}
		return true
	}
	if !has("bb_storage") || !has("bb_scheduler") {
		return nil, nil
	}
	c, err := writeClusterConfigs(o.configsDir, work, o.variantConfig)
	if err != nil {
		return nil, err
	}
	storage, err := procs.start("bb_storage", filepath.Join(o.peers, "bb_storage"), nil, c.bbStorage)
	if err != nil {
		return nil, err
	}
	if err := waitFor(storage, "tcp", "127.0.0.1:8980"); err != nil {
		return nil, err
	}
	scheduler, err := procs.start("bb_scheduler", filepath.Join(o.peers, "bb_scheduler"), nil, c.bbScheduler)
	if err != nil {
		return nil, err
	}
	if err := waitFor(scheduler, "tcp", "127.0.0.1:8983"); err != nil {
		return nil, err
	}
	ep, err := dial("127.0.0.1:8980")
	if err != nil {
		return nil, err
	}
	var sides []*benchSide
	if has("bb_worker") && has("bb_runner") {
		runner, err := procs.start("bb_runner", filepath.Join(o.peers, "bb_runner"), nil, c.bbRunner)
		if err != nil {
			return nil, err
		}
		if err := waitFor(runner, "unix", c.runnerSocket); err != nil {
			return nil, err
		}
		bbWorker, err := procs.start("bb_worker", filepath.Join(o.peers, "bb_worker"), nil, c.bbWorker)
		if err != nil {
			return nil, err
		}
		pids := []int{storage.cmd.Process.Pid, scheduler.cmd.Process.Pid, bbWorker.cmd.Process.Pid, runner.cmd.Process.Pid}
		sides = append(sides, &benchSide{name: "all-Buildbarn", ep: ep, platform: sidePlatform("bb_worker"), pids: func() []int { return pids }, rpcServers: clusterDiagnostics})
	}
	shared := []int{storage.cmd.Process.Pid, scheduler.cmd.Process.Pid}
	worker := func(process, name, binDir, index, platform string) error {
		p, err := procs.start(process, filepath.Join(binDir, "bitzel-worker"), []string{"BITZEL_WORKER_INDEX=" + index}, "worker", "--config", c.bitzelWorker)
		if err != nil {
			return err
		}
		sides = append(sides, &benchSide{name: name, ep: ep, platform: sidePlatform(platform),
			pids:       func() []int { return append(append([]int{}, shared...), withSandboxes(p.cmd.Process.Pid)...) },
			rpcServers: clusterDiagnostics})
		return nil
	}
	if err := worker("bitzel-worker", "bitzel cluster", bin, "0", "bitzel"); err != nil {
		return nil, err
	}
	if o.variantBin != "" || o.variantConfig != "" {
		vbin := bin
		if o.variantBin != "" {
			if vbin, err = filepath.Abs(o.variantBin); err != nil {
				return nil, err
			}
		}
		if err := worker("bitzel-worker-variant", "bitzel variant", vbin, "1", "bitzel-variant"); err != nil {
			return nil, err
		}
	}
	return sides, nil
}

// warmUp runs a few actions on every side, waiting for the workers to
// register with the scheduler.
func warmUp(sides []*benchSide) error {
	for _, s := range sides {
		actions, err := s.actions(20)
		if err != nil {
			return fmt.Errorf("%s: upload: %w", s.name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		for _, a := range actions {
			for {
				_, err := s.ep.execute(ctx, a)
				if err == nil {
					break
				}
				// The scheduler refuses actions of a platform
				// no worker has registered for yet.
				if status.Code(err) == codes.Unavailable && ctx.Err() == nil {
					time.Sleep(200 * time.Millisecond)
					continue
				}
				cancel()
				return fmt.Errorf("%s: warm-up: %w", s.name, err)
			}
		}
		cancel()
	}
	return nil
}

// measureRounds runs the interleaved rounds: per round and client
// count, perLevel distinct actions on every side, the order rotated
// every round so no side always follows the same one.
func measureRounds(sides []*benchSide, rounds int, clients []int, perLevel int) ([]bbMeasurement, error) {
	var results []bbMeasurement
	fmt.Fprintf(os.Stderr, "load average at the start: %s\n", loadAverage())
	for round := 1; round <= rounds; round++ {
		for _, c := range clients {
			for k := range sides {
				s := sides[(k+round)%len(sides)]
				n := max(perLevel, c)
				actions, err := s.actions(n)
				if err != nil {
					return nil, fmt.Errorf("%s: upload: %w", s.name, err)
				}
				time.Sleep(300 * time.Millisecond)
				cpu0 := cpuTime(s.pids())
				split0 := readCPUSplit(s.pids())
				rpcs0 := map[string]rpcCounts{}
				for server, address := range s.rpcServers {
					rpcs0[server] = readRPCCounts(address)
				}
				timings := make([]actionTiming, n)
				elapsed, err := testsupport.Concurrently(c, n, func(i int) error {
					start := time.Now()
					result, err := s.ep.execute(context.Background(), actions[i])
					timings[i] = actionTiming{start: start, latency: time.Since(start), metadata: result.GetExecutionMetadata()}
					return err
				}, nil)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", s.name, err)
				}
				// Let the last actions' sandboxes be released.
				time.Sleep(300 * time.Millisecond)
				cpu := cpuTime(s.pids()) - cpu0
				split := readCPUSplit(s.pids()).perAction(split0, n)
				m := bbMeasurement{round: round, clients: c, side: s.name, rate: float64(n) / elapsed.Seconds(), cpuPerAction: cpu / time.Duration(n), load: loadAverage(), stages: medianStages(timings)}
				fmt.Fprintf(os.Stderr, "round %d, %2d clients, %-14s %6.1f actions/s, CPU %.2f ms/action (load %s); medians: %s; CPU ms/action by process: %s", round, c, s.name, m.rate, ms(m.cpuPerAction), m.load, m.stages, split)
				for _, server := range slices.Sorted(maps.Keys(s.rpcServers)) {
					fmt.Fprintf(os.Stderr, "; calls/action at %s: %s", server, readRPCCounts(s.rpcServers[server]).perAction(rpcs0[server], n))
				}
				fmt.Fprintln(os.Stderr)
				results = append(results, m)
			}
		}
	}
	return results, nil
}

func buildbarnMarkdown(results []bbMeasurement, sides []*benchSide, missing []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## bitzel-bench buildbarn, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	if len(missing) > 0 {
		fmt.Fprintf(&b, "- missing peers: %s\n", strings.Join(missing, ", "))
	}
	base := sides[0].name
	fmt.Fprintf(&b, "- ratio = side's actions/s / %s's in the same round and client count\n\n", base)
	fmt.Fprintf(&b, "| round | clients | side | actions/s | x %s | CPU ms/action | load |\n|---|---|---|---|---|---|---|\n", base)
	type key struct {
		round, clients int
	}
	baseRate := map[key]float64{}
	for _, r := range results {
		if r.side == base {
			baseRate[key{r.round, r.clients}] = r.rate
		}
	}
	ratios := map[string][]float64{}
	cpus := map[string][]float64{}
	for _, r := range results {
		ratio := r.rate / baseRate[key{r.round, r.clients}]
		id := fmt.Sprintf("%s at %d clients", r.side, r.clients)
		ratios[id] = append(ratios[id], ratio)
		cpus[id] = append(cpus[id], ms(r.cpuPerAction))
		fmt.Fprintf(&b, "| %d | %d | %s | %.1f | %.2f | %.2f | %s |\n", r.round, r.clients, r.side, r.rate, ratio, ms(r.cpuPerAction), r.load)
	}
	var ids []string
	for id := range ratios {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	fmt.Fprintf(&b, "\nMedians over rounds:\n\n| side | x %s (median, range) | CPU ms/action (median) |\n|---|---|---|\n", base)
	for _, id := range ids {
		r := append([]float64{}, ratios[id]...)
		sort.Float64s(r)
		c := append([]float64{}, cpus[id]...)
		sort.Float64s(c)
		fmt.Fprintf(&b, "| %s | %.2f (%.2f-%.2f) | %.2f |\n", id, r[len(r)/2], r[0], r[len(r)-1], c[len(c)/2])
	}
	return b.String()
}
