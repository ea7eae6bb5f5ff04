#!/bin/sh
# busybox:do_configure, do_compile and do_install of Debian's busybox
# 1.35 source package, built the way BitBake builds a recipe (the
# WORKDIR layout and task invocation of WORKSPACE.md, run scripts from
# emit-runscript.sh) twice in one run:
#   remote: every task through `bitzel-worker submit` against a
#           `bitzel-worker serve` started here, outputs downloaded and
#           fed to the next task as inputs;
#   local:  the same run scripts on this host, in the directory that is
#           the worker's --exec-root-path, so absolute paths agree.
# Checks that the remote busybox runs and lists the same applets as the
# local one and is byte-identical to it (the run scripts export
# SOURCE_DATE_EPOCH); when it is not, says which bytes differ and in
# which ELF sections. Reports the remote wall time against the local.
#
# Usage, as root (it installs build dependencies and adds a deb-src
# entry for the host's suite):
#   BITZEL_BIN_DIR=bin e2e/bitbake/busybox.sh
# Everything (trees, the worker's data) goes to a new directory,
# BITZEL_BUSYBOX_DIR (which must not exist) or a fresh
# /var/tmp/bitzel-busybox-XXXXXX; it is removed on success (unless
# BITZEL_BUSYBOX_KEEP is set) and kept on failure. Runs at the same time
# do not meet.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=$(cd "${BITZEL_BIN_DIR:-$repo/bin}" 2>/dev/null && pwd) || bin=${BITZEL_BIN_DIR:-$repo/bin}
base=${BITZEL_BUSYBOX_DIR:-}
recipe=$here/recipes/busybox/busybox.bb.sh

say() { echo "busybox.sh: $*"; }
fail() {
	echo "busybox.sh: FAIL: $*" >&2
	exit 1
}

serve_pid=
ok=0
cleanup() {
	status=$?
	if [ -n "$serve_pid" ]; then
		kill -TERM "$serve_pid" 2>/dev/null || true
		wait "$serve_pid" 2>/dev/null || true
	fi
	if [ -z "$base" ]; then
		:
	elif [ "$ok" = 1 ] && [ -z "${BITZEL_BUSYBOX_KEEP:-}" ]; then
		rm -rf "$base"
	elif [ -d "$base" ]; then
		echo "busybox.sh: kept $base for inspection (serve.log, client/ = remote, build/ = local)" >&2
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || fail "run as root: it installs packages and adds a deb-src entry"
[ -x "$bin/bitzel-worker" ] || fail "no $bin/bitzel-worker: build it (go build -o bin/ ./cmd/...) or set BITZEL_BIN_DIR"
if [ -z "$base" ]; then
	base=$(mktemp -d /var/tmp/bitzel-busybox-XXXXXX) || fail "cannot create a directory under /var/tmp"
elif [ -e "$base" ]; then
	base_given=$base
	base=
	fail "BITZEL_BUSYBOX_DIR=$base_given exists; give a new path"
fi
case $base in
/tmp | /tmp/* | /usr/* | /etc/* | /opt/* | /bin/* | /sbin/* | /lib*/* | /proc/* | /dev/*)
	fail "BITZEL_BUSYBOX_DIR=$base: the sandbox mounts its own /tmp and the host's /usr, /etc, /opt, ... over that path" ;;
/*) ;;
*) fail "BITZEL_BUSYBOX_DIR=$base must be absolute" ;;
esac
case $base in *[!A-Za-z0-9/._-]*) fail "BITZEL_BUSYBOX_DIR=$base: keep to [A-Za-z0-9/._-]" ;; esac

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# --- packages and sources (do_fetch, do_unpack: the client's side) ---
say "checking build dependencies and the deb-src entry"
missing=
for p in build-essential dpkg-dev bzip2 xz-utils patch fakeroot; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if ! apt-cache showsrc busybox 2>/dev/null | grep -q '^Version: 1:1\.35'; then
	src=/etc/apt/sources.list.d/bitzel-deb-src.sources
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$src"
	elif [ -f /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list; then
		src=/etc/apt/sources.list.d/bitzel-deb-src.list
		sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >"$src"
	else
		fail "no Debian apt source found to derive a deb-src entry from"
	fi
	say "added $src"
	apt-get update -qq || fail "apt-get update"
fi
if [ -n "$missing" ]; then
	say "installing$missing"
	[ -n "$(find /var/lib/apt/lists -name '*_Packages*' 2>/dev/null | head -1)" ] || apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null || fail "apt-get install$missing"
fi
apt-cache showsrc busybox | grep -q '^Version: 1:1\.35' ||
	fail "the apt sources offer no busybox 1.35 source package (this script expects Debian bookworm's)"

mkdir -p "$base/downloads"
chmod 755 "$base"
say "apt-get source busybox"
(cd "$base/downloads" && apt-get source -qq busybox >../apt-source.log 2>&1) ||
	{ cat "$base/apt-source.log" >&2; fail "apt-get source busybox"; }
srcdir=$(find "$base/downloads" -mindepth 1 -maxdepth 1 -type d -name 'busybox-1.35*' | head -1)
[ -n "$srcdir" ] || fail "apt-get source left no busybox-1.35* directory"

# --- the two trees ---
TOPDIR=$base/build   # the local build directory and the exec root path
CLIENT=$base/client  # bitzel's tree for the remote build
WD=tmp/work/x86_64-linux/busybox/1.35.0-r0
S=busybox-1.35.0
jobs=$(nproc)
for top in "$CLIENT" "$TOPDIR"; do
	mkdir -p "$top/$WD/temp" "$top/$WD/recipe-sysroot" "$top/$WD/recipe-sysroot-native"
	cp -a "$srcdir" "$top/$WD/$S"
	for task in configure compile install; do
		PARALLEL_MAKE="-j $jobs" sh "$here/emit-runscript.sh" "$TOPDIR" "$recipe" "$task" >"$top/$WD/temp/run.do_$task"
		chmod 755 "$top/$WD/temp/run.do_$task"
	done
done
mkdir -p "$base/stage/empty"

# --- the worker ---
mkdir -p "$base/data"
chmod 755 "$base/data"
: >"$base/serve.log"
"$bin/bitzel-worker" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$base/data" \
	--exec-root-path "$TOPDIR" --cas-size 2147483648 >"$base/serve.log" 2>&1 &
serve_pid=$!
addr=
i=0
while [ $i -lt 600 ]; do
	addr=$(sed -n 's/.*serving REAPI on \([^ ]*\).*/\1/p' "$base/serve.log" | head -1)
	[ -n "$addr" ] && break
	kill -0 "$serve_pid" 2>/dev/null || { cat "$base/serve.log" >&2; fail "serve exited at start-up"; }
	sleep 0.1
	i=$((i + 1))
done
[ -n "$addr" ] || { cat "$base/serve.log" >&2; fail "serve did not start within 60s"; }
say "serve on $addr, exec root path $TOPDIR"

# do_compile and do_install write in B, an input: the overlay takes it.
mkdir -p "$base/probe/B"
echo old >"$base/probe/B/old"
"$bin/bitzel-worker" submit --quiet --remote "grpc://$addr" --input "w=$base/probe" --cwd w \
	-- /bin/sh -c 'echo new >B/new && echo more >>B/old && rm B/old' >"$base/probe.log" 2>&1 ||
	{ cat "$base/probe.log" >&2; fail "an action cannot write in its input directories, as do_compile must in B"; }

# The action's command (WORKSPACE.md, "Running a task"), the same for
# the local build: BitBake's [umask]; B from an earlier task gets the
# current time (input files are dated 2000-01-01, older than the
# host's headers, and Kbuild would rebuild every object that includes
# one); the run script, its log in temp/; then Kbuild's
# build/include2/asm, an absolute link into S, is made relative (same
# target), since the worker refuses outputs with absolute symlink
# targets; do_install (fakeroot) records the ownership it gave its
# files.
task_command() {
	c="umask 022"
	case $1 in compile | install) c="$c && find build ! -type l -exec touch -d \"@\$(date +%s)\" {} +" ;; esac
	c="$c && ./temp/run.do_$1 >./temp/log.do_$1 2>&1"
	case $1 in
	install) c="$c && mkdir -p pseudo && (cd image && find . -printf '%U:%G %#m %p\n' | LC_ALL=C sort) >pseudo/ownership" ;;
	*) c="$c && find build -type l -lname '$TOPDIR/*' -exec sh -c 'for l; do ln -sfn \"\$(realpath -m -s --relative-to=\"\${l%/*}\" \"\$(readlink \"\$l\")\")\" \"\$l\"; done' sh {} +" ;;
	esac
	echo "$c"
}

# CPU seconds (user + system): of an action, from the resource usage
# the worker reports in its auxiliary metadata (submit --json); of a
# local task, from `times` (its second line: the children's).
json_cpu() {
	tr -d ' \n' <"$1" | awk '{
		for (k = 1; k <= 2; k++) {
			key = k == 1 ? "\"user_time_seconds\":" : "\"system_time_seconds\":"
			if ((i = index($0, key)) > 0) t += substr($0, i + length(key)) + 0
		}
		printf "%.1f", t
	}'
}
times_cpu() {
	sed -n 2p "$1" | awk '{ for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] } printf "%.1f", t }'
}

# remote_task TASK "INPUTS" "OUTPUTS": WORKDIR-relative names.
remote_task() {
	task=$1
	inputs=$2
	outputs="$3 temp/log.do_$task"
	cmd=$(task_command "$task")
	in=$WD
	stage=$base/stage/$task
	mkdir -p "$stage"
	cp -p "$CLIENT/$WD/temp/run.do_$task" "$stage/"
	download=$base/stage/download
	rm -rf "$download"
	set -- --remote "grpc://$addr" --timeout 30m --cwd "$WD" --env PATH=/usr/bin:/bin --env "HOME=$TOPDIR/$WD" \
		--download "$download" --input "$in/temp=$stage" \
		--input "$in/recipe-sysroot=$base/stage/empty" --input "$in/recipe-sysroot-native=$base/stage/empty"
	for i in $inputs; do
		set -- "$@" --input "$in/$i=$CLIENT/$WD/$i"
	done
	for o in $outputs; do
		set -- "$@" --output "$o"
	done
	t0=$(now)
	if ! "$bin/bitzel-worker" submit --json "$@" -- /bin/sh -c "$cmd" >"$base/result.$task.json" 2>"$base/submit.$task.log"; then
		cat "$base/submit.$task.log" >&2
		[ -f "$download/temp/log.do_$task" ] && tail -40 "$download/temp/log.do_$task" >&2
		fail "remote do_$task failed (log above; the worker's in $base/serve.log)"
	fi
	for o in $outputs; do
		[ -e "$download/$o" ] || fail "remote do_$task: output $o did not come back"
		rm -rf "${CLIENT:?}/$WD/$o"
		mv "$download/$o" "$CLIENT/$WD/$o"
	done
	t1=$(now)
	eval "remote_$task=\$(elapsed $t0 $t1)"
	cpu=$(json_cpu "$base/result.$task.json")
	eval "remote_cpu_$task=\$cpu"
	grep -q 'Action Cache hit' "$base/submit.$task.log" && fail "remote do_$task was an Action Cache hit on a fresh worker"
	eval "say \"remote do_$task: \$remote_$task s\""
}

local_task() {
	task=$1
	wrap=
	if [ "$task" = install ] && command -v fakeroot >/dev/null; then
		wrap=fakeroot
	fi
	t0=$(now)
	# `times` prints the children's user and system time on its 2nd line.
	if ! (cd "$TOPDIR/$WD" && env -i PATH=/usr/bin:/bin "HOME=$TOPDIR/$WD" $wrap /bin/sh -c "$(task_command "$task")" && times >"$base/times.$task"); then
		tail -40 "$TOPDIR/$WD/temp/log.do_$task" >&2
		fail "local do_$task failed"
	fi
	t1=$(now)
	eval "local_$task=\$(elapsed $t0 $t1)"
	cpu=$(times_cpu "$base/times.$task")
	eval "local_cpu_$task=\$cpu"
	eval "say \"local  do_$task: \$local_$task s\""
}

# Interleaved, so that load from elsewhere on the machine hits both.
remote_task configure "$S" "build"
local_task configure
remote_task compile "$S build" "build"
local_task compile
remote_task install "$S build" "image pseudo"
local_task install

# --- checks ---
rbb=$CLIENT/$WD/image/bin/busybox
lbb=$TOPDIR/$WD/image/bin/busybox
[ -x "$rbb" ] || fail "the remote build has no image/bin/busybox"
"$rbb" --list >"$base/applets.remote" || fail "the remote busybox does not run"
"$lbb" --list >"$base/applets.local" || fail "the local busybox does not run"
if ! cmp -s "$base/applets.remote" "$base/applets.local"; then
	diff "$base/applets.local" "$base/applets.remote" >&2 || true
	fail "the remote and local busybox list different applets"
fi
applets=$(wc -l <"$base/applets.remote")
[ "$("$rbb" echo bitzel)" = bitzel ] || fail "the remote busybox's echo does not echo"
say "the remote busybox runs and lists the same $applets applets as the local one"

# The installed tree: same names, kinds, modes, link targets.
listing() { (cd "$1" && find . -printf '%y %m %p %l\n' | LC_ALL=C sort); }
if ! listing "$CLIENT/$WD/image" >"$base/image.remote" || ! listing "$TOPDIR/$WD/image" >"$base/image.local" ||
	! cmp -s "$base/image.remote" "$base/image.local"; then
	diff "$base/image.local" "$base/image.remote" >&2 || true
	fail "the installed trees (image/) differ in names, modes or links"
fi
grep -q '^0:0 ' "$CLIENT/$WD/pseudo/ownership" && ! grep -qv '^0:0 ' "$CLIENT/$WD/pseudo/ownership" ||
	fail "remote do_install: files not owned by root inside the task"

# explain A B: which bytes differ, in which sections, and the likely why.
explain() {
	count=$(cmp -l "$1" "$2" | wc -l)
	echo "busybox.sh: $count bytes differ between $1 and $2 (sizes $(wc -c <"$1") and $(wc -c <"$2"))" >&2
	echo "busybox.sh: first differences (offset, octal bytes):" >&2
	cmp -l "$1" "$2" | head -10 >&2
	echo "busybox.sh: by ELF section:" >&2
	cmp -l "$1" "$2" | awk -v f="$1" '
	function hex(h,   v, i) {
		v = 0
		for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", substr(tolower(h), i, 1)) - 1
		return v
	}
	BEGIN {
		cmd = "readelf -SW " f
		while ((cmd | getline line) > 0) {
			if (line !~ /^ *\[ *[0-9]+\]/) continue
			sub(/^ *\[ *[0-9]+\] */, "", line)
			split(line, x, " +")
			if (x[1] == "NULL" || x[1] == "") continue
			n++; name[n] = x[1]; off[n] = hex(x[4]); size[n] = hex(x[5])
		}
	}
	{
		o = $1 - 1; s = "(outside sections)"
		for (i = 1; i <= n; i++) if (o >= off[i] && o < off[i] + size[i]) { s = name[i]; break }
		c[s]++
	}
	END { for (s in c) printf "  %-24s %d bytes\n", s, c[s] }' >&2
	for f in "$1" "$2"; do
		echo "busybox.sh: build id of $f: $(readelf -n "$f" 2>/dev/null | sed -n 's/.*Build ID: //p')" >&2
	done
	echo "busybox.sh: strings that differ (remote <, local >):" >&2
	strings -a "$1" >"$base/strings.1"
	strings -a "$2" >"$base/strings.2"
	diff "$base/strings.1" "$base/strings.2" | head -20 >&2 || true
	echo "busybox.sh: a different build id only follows other differences; differing strings name the cause" >&2
	echo "busybox.sh: (a build date: SOURCE_DATE_EPOCH not honoured; a path: not the same exec root path)." >&2
}
identical=1
for f in image/bin/busybox build/busybox_unstripped; do
	if cmp -s "$CLIENT/$WD/$f" "$TOPDIR/$WD/$f"; then
		say "$f: byte-identical ($(wc -c <"$TOPDIR/$WD/$f") bytes, sha256 $(sha256sum <"$TOPDIR/$WD/$f" | cut -c1-16)...)"
	else
		identical=0
		explain "$CLIENT/$WD/$f" "$TOPDIR/$WD/$f"
	fi
done
[ "$identical" = 1 ] || fail "the remote busybox is not byte-identical to the local one (see above)"

# --- timings ---
remote_total=$(awk -v a="$remote_configure" -v b="$remote_compile" -v c="$remote_install" 'BEGIN { print a + b + c }')
local_total=$(awk -v a="$local_configure" -v b="$local_compile" -v c="$local_install" 'BEGIN { print a + b + c }')
say "wall time, remote (submit: upload, run, download) against local, measured in this run:"
for t in configure compile install total; do
	eval "r=\$remote_$t l=\$local_$t"
	awk -v t="$t" -v r="$r" -v l="$l" 'BEGIN { printf "busybox.sh:   do_%-10s remote %7.1fs  local %7.1fs  ratio %.3fx\n", t, r, l, r / l }' |
		sed 's/do_total     /total        /'
done
awk -v r="$remote_total" -v l="$local_total" 'BEGIN { x = r / l; printf "busybox.sh: remote/local = %.3fx (target <= 1.05x)%s\n", x, (x > 1.05 ? ": OVER the target" : "") }'
say "CPU time (user + system) of the task, remote (the worker's measure) and local:"
for t in configure compile install; do
	eval "r=\$remote_cpu_$t l=\$local_cpu_$t"
	say "  do_$t remote ${r}s local ${l}s"
done
say "where the remote time goes (submit's clock: inputs hashed and uploaded, run, outputs downloaded; the worker's own stages):"
for t in configure compile install; do
	awk -v t="$t" '
	function ts(   x) { match($0, /\[ *[0-9.]+s\]/); x = substr($0, RSTART + 1, RLENGTH - 3); gsub(/ /, "", x); return x + 0 }
	/uploaded .* missing blobs/ { up = ts() }
	/\] completed$/ { co = ts() }
	/\] done:/ { dn = ts() }
	END {
		printf "busybox.sh:   do_%-10s hash+upload %5.1fs  queued+run %6.1fs  download %5.1fs\n", t, up, co - up, dn - co
	}' "$base/submit.$t.log"
done
for side in "$CLIENT" "$TOPDIR"; do
	n=$(grep -c '^  CC ' "$side/$WD/temp/log.do_install" || true)
	[ "$side" = "$CLIENT" ] && where=remote || where=local
	say "  $where do_install compiled $n files$(grep -m1 '^  CC ' "$side/$WD/temp/log.do_install" | sed 's/^ */, first: /')"
done
grep ' action ' "$base/serve.log" | sed -e 's/^.* action [0-9a-f]*\/[0-9]* *: /busybox.sh:   worker: /' | tail -3
ok=1
say "PASS"
