package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	remoteexecution "github.com/bazelbuild/remote-apis/build/bazel/remote/execution/v2"
	bzclient "github.com/bitzel/bitzel-worker/client"
	"github.com/bitzel/bitzel-worker/internal/fsutil"
	"github.com/buildbarn/bb-storage/pkg/digest"
)

// The BitBake proof: three recipes laid out the way BitBake lays out
// WORKDIR, with run scripts of the shape BitBake writes
// (bitbake/emit-runscript.sh), every task run through `bitzel-worker
// submit` against `serve` in dependency order, each task's outputs
// downloaded and fed to the next tasks the way bitzel does, and the
// result compared with the same run scripts run on the host at the
// same absolute path. WORKSPACE.md is the contract this follows.

// bbTask is one BitBake task as bitzel sends it.
type bbTask struct {
	name string
	// inputs are WORKDIR-relative directories taken from the client's
	// tree ("S" is the recipe's source directory).
	inputs []string
	// sysroots: recipe-sysroot (a bitzel.layers union of the
	// dependencies' sysroot-destdir trees) and recipe-sysroot-native.
	sysroots bool
	outputs  []string // WORKDIR-relative, besides temp/log.do_<task>
	fakeroot bool
}

type bbRecipe struct {
	pn, pv string
	deps   []string // the recipe-sysroot layers, topmost first
	tasks  []bbTask
}

func (r *bbRecipe) workdir() string { return "tmp/work/x86_64-linux/" + r.pn + "/" + r.pv + "-r0" }
func (r *bbRecipe) source() string  { return r.pn + "-" + r.pv }
func (r *bbRecipe) file() string    { return filepath.Join(bbFixture, "recipes", r.pn, r.pn+".bb.sh") }

const (
	bbFixture       = "bitbake"
	bbHelloExpected = "HELLO, BITZEL! (greet 1.0, shout 1.0)\n"
)

func bbRecipes() []*bbRecipe {
	recipe := func(pn string, deps ...string) *bbRecipe {
		return &bbRecipe{pn: pn, pv: "1.0", deps: deps, tasks: []bbTask{
			{name: "configure", inputs: []string{"S"}, sysroots: true, outputs: []string{"build"}},
			{name: "compile", inputs: []string{"S", "build"}, sysroots: true, outputs: []string{"build"}},
			{name: "install", inputs: []string{"S", "build"}, sysroots: true, outputs: []string{"image", "pseudo"}, fakeroot: true},
			{name: "populate_sysroot", inputs: []string{"image"}, outputs: []string{"sysroot-destdir"}},
		}}
	}
	hello := recipe("hello", "libshout", "libgreet")
	hello.tasks[3] = bbTask{name: "deploy", inputs: []string{"image"}, outputs: []string{"deploy-hello"}}
	return []*bbRecipe{recipe("libgreet"), recipe("libshout", "libgreet"), hello}
}

// command is the shell command of the action's argv
// (/bin/sh -c COMMAND), run in WORKDIR (WORKSPACE.md, "Running a
// task"): BitBake's [umask]; B from an earlier task made newer than
// the host's headers (input files are dated 2000-01-01, and make would
// rebuild whatever depends on /usr/include); the run script with its
// log in temp/; absolute symlinks into the build directory made
// relative (the worker refuses absolute targets in outputs); and for a
// fakeroot task a record of the ownership it gave its files (not an
// output property; this stands in for pseudo's database).
func (t *bbTask) command(topdir string) string {
	parts := []string{"umask 022"}
	for _, in := range t.inputs {
		if in == "build" {
			parts = append(parts, `find build ! -type l -exec touch -d "@$(date +%s)" {} +`)
		}
	}
	parts = append(parts, fmt.Sprintf("./temp/run.do_%s >./temp/log.do_%s 2>&1", t.name, t.name))
	for _, o := range t.outputs {
		if o != "pseudo" {
			parts = append(parts, fmt.Sprintf(`find %s -type l -lname '%s/*' -exec sh -c 'for l; do ln -sfn "$(realpath -m -s --relative-to="${l%%/*}" "$(readlink "$l")")" "$l"; done' sh {} +`, o, topdir))
		}
	}
	if t.fakeroot {
		parts = append(parts, `mkdir -p pseudo && (cd image && find . -printf '%U:%G %#m %p\n' | LC_ALL=C sort) >pseudo/ownership`)
	}
	return strings.Join(parts, " && ")
}

func (t *bbTask) allOutputs() []string {
	return append(append([]string{}, t.outputs...), "temp/log.do_"+t.name)
}

// bbBuild is the state of one test build.
type bbBuild struct {
	t       *testing.T
	bin     string
	s       *server
	recipes map[string]*bbRecipe
	topdir  string // the exec root path = the local build directory
	client  string // bitzel's side of the remote build
	stage   string // per-task temp/ inputs and an empty directory
}

// bbScratchDir makes the directory a BitBake-style build lives in. Not
// under /tmp (the sandbox mounts its own there) nor under a host path
// the sandbox binds, and reachable by the unprivileged ids a root
// worker maps actions to. /var/tmp is the natural place, but it is not
// writable for an ordinary user on every machine (some images ship it
// 0755), so BITZEL_SCRATCH_DIR names a directory of the user's own;
// scripts/test.sh sets it for the rootless run.
func bbScratchDir(t *testing.T, prefix string) string {
	parent := os.Getenv("BITZEL_SCRATCH_DIR")
	if parent == "" {
		parent = "/var/tmp"
	}
	base, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		t.Fatalf("no scratch directory for the build (set BITZEL_SCRATCH_DIR to a writable directory outside /tmp): %v", err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return base
}

// Long on purpose: one scenario whose steps build on each other (each
// needs the state the previous left), read top to bottom.
func TestBitBakeThreeRecipesRemoteMatchesLocal(t *testing.T) {
	start := time.Now()
	bin := binaries(t)
	base := bbScratchDir(t, "bitzel-bb-")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept the build for inspection: %s (client: bitzel's tree; build: the local one)", base)
			return
		}
		fsutil.RemoveAll(base)
	})
	b := &bbBuild{
		t: t, bin: bin, recipes: map[string]*bbRecipe{},
		topdir: filepath.Join(base, "build"), client: filepath.Join(base, "client"), stage: filepath.Join(base, "stage"),
	}
	b.s = startServer(t, "--exec-root-path", b.topdir)
	recipes := bbRecipes()
	for _, r := range recipes {
		b.recipes[r.pn] = r
	}
	bbCheckInputsWritable(t, bin, b.s, base)

	// do_fetch, do_unpack and the run scripts are the client's: the
	// same sources and scripts go into both trees.
	for _, r := range recipes {
		for _, top := range []string{b.client, b.topdir} {
			wd := filepath.Join(top, r.workdir())
			bbCopyTree(t, filepath.Join(bbFixture, "recipes", r.pn, r.source()), filepath.Join(wd, r.source()))
			for _, task := range r.tasks {
				script := bbEmit(t, b.topdir, r, task.name)
				bbWriteFile(t, filepath.Join(wd, "temp", "run.do_"+task.name), script, 0o755)
				bbWriteFile(t, filepath.Join(b.stage, r.pn, task.name, "run.do_"+task.name), script, 0o755)
			}
		}
	}
	os.MkdirAll(filepath.Join(b.stage, "empty"), 0o755)

	// Remote, in dependency order, checking the layer cache as it goes.
	remoteStart := time.Now()
	first := map[string]bbSnapshot{}
	layers := &bbLayerCheck{b: b, seen: map[string]bool{}, firstInode: map[string]uint64{}}
	for _, r := range recipes {
		for i := range r.tasks {
			task := &r.tasks[i]
			before := bbScrapeLayerLookups(t, b.s)
			_, stderr := b.submit(r, task)
			if strings.Contains(stderr, "Action Cache hit") {
				t.Fatalf("%s:do_%s: first run was an Action Cache hit", r.pn, task.name)
			}
			layers.check(r, task, before, bbScrapeLayerLookups(t, b.s))
			first[r.pn+":"+task.name] = bbSnap(t, filepath.Join(b.client, r.workdir()), task.allOutputs())
			bbCheckLog(t, filepath.Join(b.client, r.workdir()), r, task)
		}
	}
	remoteTime := time.Since(remoteStart)
	layers.checkShared()

	// Local: the same scripts in the same absolute path.
	localStart := time.Now()
	local := map[string]bbSnapshot{}
	for _, r := range recipes {
		wd := filepath.Join(b.topdir, r.workdir())
		// do_prepare_recipe_sysroot: the dependencies' sysroot-destdir
		// trees, the topmost copied last so that its files win.
		for i := len(r.deps) - 1; i >= 0; i-- {
			bbCopyTree(t, filepath.Join(b.topdir, b.recipes[r.deps[i]].workdir(), "sysroot-destdir"), filepath.Join(wd, "recipe-sysroot"))
		}
		os.MkdirAll(filepath.Join(wd, "recipe-sysroot"), 0o755)
		os.MkdirAll(filepath.Join(wd, "recipe-sysroot-native"), 0o755)
		for i := range r.tasks {
			task := &r.tasks[i]
			b.runLocal(r, task)
			local[r.pn+":"+task.name] = bbSnap(t, wd, task.allOutputs())
		}
	}
	localTime := time.Since(localStart)

	// Remote outputs are local outputs, byte for byte and mode for
	// mode, including what a task copied from its inputs: submit sends
	// input modes (unix_mode) and the worker honours them.
	for _, r := range recipes {
		for _, task := range r.tasks {
			id := r.pn + ":do_" + task.name
			for _, e := range bbCompare(first[r.pn+":"+task.name], local[r.pn+":"+task.name]) {
				t.Errorf("%s: remote differs from local: %s", id, e)
			}
		}
	}
	b.checkFakeroot(first["hello:install"])

	// The application runs and says the right thing, linked against
	// the libraries' shared objects and against their archives.
	hello := filepath.Join(b.client, b.recipes["hello"].workdir())
	libPath := filepath.Join(b.client, b.recipes["libshout"].workdir(), "sysroot-destdir/usr/lib") + ":" +
		filepath.Join(b.client, b.recipes["libgreet"].workdir(), "sysroot-destdir/usr/lib")
	for _, program := range []string{filepath.Join(hello, "image/usr/bin/hello"), filepath.Join(hello, "deploy-hello/hello-static")} {
		cmd := exec.Command(program)
		cmd.Env = []string{"LD_LIBRARY_PATH=" + libPath}
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != bbHelloExpected {
			t.Errorf("%s: %v, printed %q; want %q", program, err, out, bbHelloExpected)
		}
	}

	// A second build from a clean tree: every task is an Action Cache
	// hit, materialises nothing, and gives the same outputs.
	for _, r := range recipes {
		wd := filepath.Join(b.client, r.workdir())
		for _, task := range r.tasks {
			for _, o := range task.allOutputs() {
				fsutil.RemoveAll(filepath.Join(wd, o))
			}
		}
	}
	secondStart := time.Now()
	for _, r := range recipes {
		for i := range r.tasks {
			task := &r.tasks[i]
			before := bbScrapeLayerLookups(t, b.s)
			_, stderr := b.submit(r, task)
			if !strings.Contains(stderr, "Action Cache hit") {
				t.Errorf("%s:do_%s: second run was not an Action Cache hit:\n%s", r.pn, task.name, stderr)
			}
			if after := bbScrapeLayerLookups(t, b.s); after != before {
				t.Errorf("%s:do_%s: an Action Cache hit looked up layers: %v -> %v", r.pn, task.name, before, after)
			}
			again := bbSnap(t, filepath.Join(b.client, r.workdir()), task.allOutputs())
			if errs := bbCompare(again, first[r.pn+":"+task.name]); len(errs) > 0 {
				t.Errorf("%s:do_%s: the cached result differs from the first run: %v", r.pn, task.name, errs)
			}
		}
	}
	t.Logf("remote build %v (second, all cached: %v), local build %v, total %v",
		remoteTime.Round(time.Millisecond), time.Since(secondStart).Round(time.Millisecond), localTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// submit runs one task through `bitzel-worker submit` the way bitzel
// would and leaves its outputs in the client's WORKDIR.
func (b *bbBuild) submit(r *bbRecipe, task *bbTask) (stdout, stderr string) {
	t := b.t
	t.Helper()
	wd := r.workdir()
	clientWD := filepath.Join(b.client, wd)
	command := task.command(b.topdir)
	args := []string{"submit", "--remote", "grpc://" + b.s.address, "--timeout", "2m",
		"--cwd", wd, "--env", "PATH=/usr/bin:/bin", "--env", "HOME=" + filepath.Join(b.topdir, wd),
		"--input", wd + "/temp=" + filepath.Join(b.stage, r.pn, task.name)}
	for _, i := range task.inputs {
		if i == "S" {
			i = r.source()
		}
		args = append(args, "--input", wd+"/"+i+"="+filepath.Join(clientWD, i))
	}
	if task.sysroots {
		args = append(args, "--input", wd+"/recipe-sysroot-native="+filepath.Join(b.stage, "empty"))
		if len(r.deps) == 0 {
			args = append(args, "--input", wd+"/recipe-sysroot="+filepath.Join(b.stage, "empty"))
		} else {
			var dirs []string
			for _, dep := range r.deps {
				dirs = append(dirs, filepath.Join(b.client, b.recipes[dep].workdir(), "sysroot-destdir"))
			}
			args = append(args, "--layer", wd+"/recipe-sysroot="+strings.Join(dirs, ","))
		}
	}
	// Outputs come down next to the tree, then replace what the
	// client had at their paths (an output may be an input too).
	download := filepath.Join(b.stage, "download")
	fsutil.RemoveAll(download)
	args = append(args, "--download", download)
	for _, o := range task.allOutputs() {
		args = append(args, "--output", o)
	}
	args = append(args, "--", "/bin/sh", "-c", command)
	var out, errOut bytes.Buffer
	cmd := exec.Command(filepath.Join(b.bin, "bitzel-worker"), args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		log, _ := os.ReadFile(filepath.Join(download, "temp", "log.do_"+task.name))
		t.Fatalf("%s:do_%s: submit: %v\nstderr:\n%s\nlog.do_%s:\n%s\nserver:\n%s", r.pn, task.name, err, errOut.String(), task.name, log, b.s.logs())
	}
	for _, o := range task.allOutputs() {
		from, to := filepath.Join(download, o), filepath.Join(clientWD, o)
		fsutil.RemoveAll(to)
		// Moving a directory to another parent rewrites its "..":
		// a read-only one (an input directory's mode) must be made
		// writable for that, and is given its mode back.
		info, err := os.Lstat(from)
		if err != nil {
			t.Fatalf("%s:do_%s: output %s was not downloaded: %v", r.pn, task.name, o, err)
		}
		if info.IsDir() {
			os.Chmod(from, info.Mode().Perm()|0o700)
		}
		if err := os.Rename(from, to); err != nil {
			t.Fatalf("%s:do_%s: output %s: %v", r.pn, task.name, o, err)
		}
		if info.IsDir() {
			os.Chmod(to, info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		}
	}
	return out.String(), errOut.String()
}

// runLocal runs one task on the host, in the local build directory,
// with the environment the action gets and nothing else.
func (b *bbBuild) runLocal(r *bbRecipe, task *bbTask) {
	t := b.t
	t.Helper()
	wd := filepath.Join(b.topdir, r.workdir())
	argv := []string{"/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "HOME=" + wd}
	if task.fakeroot && os.Geteuid() != 0 {
		argv = append(argv, bbFakeroot(t)...)
	}
	argv = append(argv, "/bin/sh", "-c", task.command(b.topdir))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = wd
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(wd, "temp", "log.do_"+task.name))
		t.Fatalf("local %s:do_%s: %v\n%s\nlog.do_%s:\n%s", r.pn, task.name, err, out, task.name, log)
	}
}

// bbFakeroot is the local stand-in for a fakeroot task's uid 0:
// fakeroot when installed, else a user namespace that maps 0 to the
// caller, which is what the worker does.
func bbFakeroot(t *testing.T) []string {
	if p, err := exec.LookPath("fakeroot"); err == nil {
		return []string{p, "--"}
	}
	if p, err := exec.LookPath("unshare"); err == nil {
		return []string{p, "--map-root-user"}
	}
	t.Fatal("a fakeroot task needs fakeroot or unshare on the host")
	return nil
}

// checkFakeroot: do_install ran as uid 0 inside, chowned to root and
// set a setuid bit; the mode travels as unix_mode, the ownership in
// the task's own record.
func (b *bbBuild) checkFakeroot(install bbSnapshot) {
	t := b.t
	for path, mode := range map[string]uint32{"image/usr/bin/hello": 0o4755, "image/etc/hello": 0o750, "image/etc/hello/hello.conf": 0o640} {
		if e, ok := install[path]; !ok || e.mode != mode {
			t.Errorf("hello:do_install: %s has mode %o, want %o", path, e.mode, mode)
		}
	}
	ownership, err := os.ReadFile(filepath.Join(b.client, b.recipes["hello"].workdir(), "pseudo", "ownership"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ownership), "0:0 04755 ./usr/bin/hello\n") {
		t.Errorf("hello:do_install did not leave a setuid root hello:\n%s", ownership)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(ownership)), "\n") {
		if !strings.HasPrefix(line, "0:0 ") {
			t.Errorf("hello:do_install: not owned by root in the task: %q", line)
		}
	}
}

// bbCheckInputsWritable: every BitBake task after do_configure writes
// in directories that are its inputs (B in do_compile), which the
// overlay allows: writes land in the action's upper directory.
func bbCheckInputsWritable(t *testing.T, bin string, s *server, base string) {
	dir := filepath.Join(base, "probe")
	bbWriteFile(t, filepath.Join(dir, "B", "old"), "old\n", 0o644)
	cmd := exec.Command(filepath.Join(bin, "bitzel-worker"), "submit", "--quiet", "--remote", "grpc://"+s.address,
		"--input", "w="+dir, "--cwd", "w", "--", "/bin/sh", "-c", "echo new >B/new && echo more >>B/old && mkdir B/d && rm B/old")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("an action cannot write in its input directories, as do_compile must in B: %v\n%s", err, out)
	}
}

// bbLayerCheck follows the layer cache through the metrics: every
// executed action looks up its exec-root layer and each tree its
// recipe-sysroot lists; a tree is built (a miss) the first time and
// found (a hit) ever after.
type bbLayerCheck struct {
	b          *bbBuild
	seen       map[string]bool
	firstInode map[string]uint64
	uses       map[string]int
}

func (l *bbLayerCheck) check(r *bbRecipe, task *bbTask, before, after bbLookups) {
	t := l.b.t
	t.Helper()
	var listed []string
	if task.sysroots {
		for _, dep := range r.deps {
			listed = append(listed, l.b.treeDigest(filepath.Join(l.b.client, l.b.recipes[dep].workdir(), "sysroot-destdir")))
		}
	}
	wantHits, wantMisses := 0.0, 1.0 // the exec root's own layer is new
	for _, d := range listed {
		if l.seen[d] {
			wantHits++
		} else {
			wantMisses++
		}
	}
	if hits, misses := after.hits-before.hits, after.misses-before.misses; hits != wantHits || misses != wantMisses {
		t.Errorf("%s:do_%s: layer cache: %v hits, %v misses; want %v and %v (recipe-sysroot lists %d trees)",
			r.pn, task.name, hits, misses, wantHits, wantMisses, len(listed))
	}
	if l.uses == nil {
		l.uses = map[string]int{}
	}
	for _, d := range listed {
		l.uses[d]++
		inode := l.b.layerInode(d)
		if !l.seen[d] {
			l.seen[d] = true
			l.firstInode[d] = inode
		} else if inode != l.firstInode[d] {
			t.Errorf("%s:do_%s: layer %s was built again", r.pn, task.name, d)
		}
	}
}

// checkShared: libgreet's sysroot layer was built once and used by
// both dependants (3 tasks each).
func (l *bbLayerCheck) checkShared() {
	d := l.b.treeDigest(filepath.Join(l.b.client, l.b.recipes["libgreet"].workdir(), "sysroot-destdir"))
	if now := l.b.layerInode(d); l.uses[d] != 6 || now != l.firstInode[d] {
		l.b.t.Errorf("libgreet's sysroot layer %s: used by %d actions, inode %d then %d; want 6 uses of one layer",
			d, l.uses[d], l.firstInode[d], now)
	}
}

// treeDigest is the Directory digest submit computes for a local tree.
func (b *bbBuild) treeDigest(dir string) string {
	builder := bzclient.NewTreeBuilder(digest.MustNewFunction("", remoteexecution.DigestFunction_SHA256))
	builder.PreserveModes = true // as submit does by default
	d, err := builder.AddDirectory(dir)
	if err != nil {
		b.t.Fatal(err)
	}
	return fmt.Sprintf("%s-%d", d.GetHashString(), d.GetSizeBytes())
}

// layerInode is the inode of the layer cache's directory for a tree
// (cas/layer_cache.go names it <hash>-<size>-<digest function>).
func (b *bbBuild) layerInode(d string) uint64 {
	matches, _ := filepath.Glob(filepath.Join(b.s.dataDir, "layers", "layers", d+"-*"))
	if len(matches) != 1 {
		b.t.Fatalf("layer %s: %d directories in the layer cache", d, len(matches))
	}
	st, err := os.Stat(matches[0])
	if err != nil {
		b.t.Fatal(err)
	}
	return bbInode(st)
}

type bbLookups struct{ hits, misses float64 }

// bbScrapeLayerLookups reads bitzel_cas_layer_cache_lookups_total.
func bbScrapeLayerLookups(t *testing.T, s *server) bbLookups {
	t.Helper()
	response, err := http.Get("http://" + s.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	var l bbLookups
	scanner := bufio.NewScanner(response.Body)
	for scanner.Scan() {
		line := scanner.Text()
		for label, field := range map[string]*float64{`{result="hit"}`: &l.hits, `{result="miss"}`: &l.misses} {
			if rest, ok := strings.CutPrefix(line, "bitzel_cas_layer_cache_lookups_total"+label+" "); ok {
				*field, _ = strconv.ParseFloat(rest, 64)
			}
		}
	}
	return l
}

// TestBitBakeRecipeSysrootUnionPrecedence pins down what a
// recipe-sysroot made of several sysroot-destdir trees looks like:
// the union's own entries over the first listed tree over the next;
// directories merge; a file or symlink hides whatever lies under it in
// lower trees, and a directory hides a lower file. The action sees it
// through the kernel's overlay, the outputs through the worker's
// merged view; both must agree.
func TestBitBakeRecipeSysrootUnionPrecedence(t *testing.T) {
	bin := binaries(t)
	s := startServer(t)
	base := bbScratchDir(t, "bitzel-bb-union-")
	t.Cleanup(func() { fsutil.RemoveAll(base) })
	files := map[string]string{
		"own/usr/include/a.h":       "own",
		"top/usr/include/a.h":       "top",
		"top/usr/include/t.h":       "top",
		"top/usr/share/x":           "top file over a lower directory",
		"top/usr/lib/d/in-dir":      "top directory over a lower file",
		"bottom/usr/include/a.h":    "bottom",
		"bottom/usr/include/b.h":    "bottom",
		"bottom/usr/share/x/hidden": "bottom",
		"bottom/usr/lib/d":          "bottom file",
		"bottom/usr/lib/libz.so.1":  "bottom",
	}
	for p, content := range files {
		bbWriteFile(t, filepath.Join(base, p), content, 0o644)
	}
	os.Symlink("libz.so.1", filepath.Join(base, "top/usr/lib/libz.so"))
	download := filepath.Join(base, "download")
	cmd := exec.Command(filepath.Join(bin, "bitzel-worker"), "submit", "--quiet", "--remote", "grpc://"+s.address,
		"--input", "rs="+filepath.Join(base, "own"), "--layer", "rs="+filepath.Join(base, "top")+","+filepath.Join(base, "bottom"),
		"--output", "rs", "--download", download,
		"--", "/bin/sh", "-c", `cd rs && find . ! -type d | LC_ALL=C sort | while read f; do if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f: $(cat "$f")"; fi; done`)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, out)
	}
	want := "./usr/include/a.h: own\n./usr/include/b.h: bottom\n./usr/include/t.h: top\n" +
		"./usr/lib/d/in-dir: top directory over a lower file\n./usr/lib/libz.so -> libz.so.1\n./usr/lib/libz.so.1: bottom\n" +
		"./usr/share/x: top file over a lower directory\n"
	if string(out) != want {
		t.Errorf("the action saw:\n%s\nwant:\n%s", out, want)
	}
	var downloaded strings.Builder
	filepath.Walk(filepath.Join(download, "rs"), func(path string, info fs.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join(download, "rs"), path)
		if info.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(path)
			fmt.Fprintf(&downloaded, "./%s -> %s\n", rel, target)
		} else {
			data, _ := os.ReadFile(path)
			fmt.Fprintf(&downloaded, "./%s: %s\n", rel, data)
		}
		return nil
	})
	if downloaded.String() != want {
		t.Errorf("the outputs hold:\n%s\nwant:\n%s", downloaded.String(), want)
	}
}
