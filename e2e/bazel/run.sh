#!/bin/sh
# Real Bazel against `bitzel-worker serve`: Debian's Bazel 4.2.3 (REAPI
# 2.0, legacy output_files/output_directories) builds the workspace
# beside this script with every spawn executed remotely, offline, then
# builds it again after `bazel clean`, where every spawn must be a
# remote cache hit. Nested genrule outputs, a genrule consuming another
# package's output, a cc_library + cc_binary compiled and linked with
# the host gcc, and an sh_test run remotely.
#
# Usage: sh e2e/bazel/run.sh   (as root the first time: it installs
#        Debian's bazel-bootstrap, bazel-rules-java, bazel-platforms, gcc, g++)
# Environment:
#   BITZEL_BIN_DIR          bitzel-worker + bitzel-sandbox-init (default:
#                           bin/ of this tree, built there when absent)
#   BITZEL_E2E_WORKER_USER  run the worker as this ordinary user (rootless);
#                           default: as whoever runs this script
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin_dir=${BITZEL_BIN_DIR:-$repo/bin}
worker_user=${BITZEL_E2E_WORKER_USER:-}

say() { echo "e2e/bazel: $*"; }
fail() {
	echo "e2e/bazel: FAIL: $*" >&2
	exit 1
}
now() { date +%s; }

# --- Debian's Bazel 4.2.3 and what it needs offline -------------------------
packages="bazel-bootstrap bazel-rules-java bazel-platforms gcc g++"
missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	[ "$(id -u)" = 0 ] || fail "packages$missing are not installed; run this as root to install them"
	say "installing$missing"
	apt-get update -qq || fail "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
		fail "apt-get install$missing failed"
fi
command -v bazel >/dev/null || fail "no bazel on PATH after installing bazel-bootstrap"

# The repositories Bazel would download, from the Debian packages.
debian_repo() { # PACKAGE: the directory of the one WORKSPACE file it installs
	ws=$(dpkg -L "$1" | grep '/WORKSPACE$' || true)
	[ -n "$ws" ] && [ "$(echo "$ws" | wc -l)" -eq 1 ] ||
		fail "expected one WORKSPACE file in dpkg -L $1, found: ${ws:-none}"
	dirname "$ws"
}
rules_java=$(debian_repo bazel-rules-java)
platforms=$(debian_repo bazel-platforms)

# --- a scratch area: binaries, worker data, workspace, Bazel's output root --
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bitzel-e2e-bazel-XXXXXX")
# As root the sandbox's actions run as unprivileged host ids, which must
# reach the data directory (and so every directory above it).
chmod 755 "$tmp"
server_pid=""
bazel_started=""
startup_opts="--nohome_rc --output_user_root=$tmp/bazel-root --max_idle_secs=600"

cleanup() {
	status=$?
	trap - EXIT INT TERM
	if [ -n "$bazel_started" ]; then
		if ! (cd "$tmp/ws" && timeout 60 bazel $startup_opts shutdown) >/dev/null 2>&1; then
			for f in "$tmp"/bazel-root/*/server/server.pid.txt; do
				[ ! -f "$f" ] || kill -KILL "$(cat "$f")" 2>/dev/null || true
			done
		fi
	fi
	if [ -n "$server_pid" ]; then
		kill -TERM "$server_pid" 2>/dev/null || true
		i=0
		while kill -0 "$server_pid" 2>/dev/null && [ $i -lt 60 ]; do
			sleep 0.5
			i=$((i + 1))
		done
		kill -KILL "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
		if [ "$status" -ne 0 ]; then
			echo "e2e/bazel: last lines of the worker's log:" >&2
			tail -n 40 "$tmp/server.log" >&2 || true
		fi
	fi
	chmod -R u+w "$tmp" 2>/dev/null || true
	rm -rf "$tmp"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Private copies of the binaries: others may rebuild bin/ meanwhile.
mkdir -m 755 "$tmp/bin"
if [ -x "$bin_dir/bitzel-worker" ]; then
	cp "$bin_dir/bitzel-worker" "$tmp/bin/"
	[ ! -x "$bin_dir/bitzel-sandbox-init" ] || cp "$bin_dir/bitzel-sandbox-init" "$tmp/bin/"
else
	say "no $bin_dir/bitzel-worker: building it"
	(cd "$repo" && PATH="/usr/local/go/bin:$PATH" go build -o "$tmp/bin/" ./cmd/...) || fail "go build ./cmd/... failed"
fi

# The workspace, with the Debian repositories' paths filled in.
cp -R "$here/workspace" "$tmp/ws"
sed -e "s|@@DEBIAN_RULES_JAVA@@|$rules_java|" -e "s|@@DEBIAN_PLATFORMS@@|$platforms|" \
	"$here/workspace/WORKSPACE" >"$tmp/ws/WORKSPACE"
mkdir "$tmp/logs"

# --- the worker ----------------------------------------------------------------
mkdir -m 755 "$tmp/data"
run_as=""
if [ -n "$worker_user" ]; then
	chown "$worker_user" "$tmp/data"
	run_as="setpriv --reuid=$(id -u "$worker_user") --regid=$(id -g "$worker_user") --init-groups"
fi
# Created here: the background job opens it only when it gets to run.
: >"$tmp/server.log"
$run_as "$tmp/bin/bitzel-worker" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
	--data-dir "$tmp/data" --cas-size 1073741824 >"$tmp/server.log" 2>&1 &
server_pid=$!
addr=""
i=0
while [ -z "$addr" ]; do
	kill -0 "$server_pid" 2>/dev/null || fail "bitzel-worker serve exited at start-up: $(cat "$tmp/server.log")"
	[ $i -lt 120 ] || fail "bitzel-worker serve did not log 'serving REAPI on' within 60s"
	addr=$(sed -n 's/.*serving REAPI on \([^ ]*\).*/\1/p' "$tmp/server.log")
	[ -n "$addr" ] || sleep 0.5
	i=$((i + 1))
done
say "worker serving REAPI on $addr${worker_user:+ as $worker_user}"

# --- Bazel ---------------------------------------------------------------------
# Remote execution only, never a local fallback; no downloads.
build_opts="--remote_executor=grpc://$addr --spawn_strategy=remote --remote_local_fallback=false --jobs=8
	--experimental_repository_disable_download --repository_cache=
	--incompatible_strict_action_env --verbose_failures --test_output=errors
	--curses=no --color=no --show_progress_rate_limit=10"

# bazel_cmd NAME ARGS...: runs Bazel in the workspace, output in logs/NAME.
bazel_cmd() {
	name=$1
	shift
	bazel_started=1
	start=$(now)
	if ! (cd "$tmp/ws" && timeout 300 bazel $startup_opts "$@") >"$tmp/logs/$name" 2>&1; then
		echo "e2e/bazel: 'bazel $*' failed; Bazel said:" >&2
		grep -v '^\[' "$tmp/logs/$name" | sed -n -E '/ERROR|FAIL|Terminated/,$p' | head -n 120 >&2
		fail "bazel $1 ($name) failed or took over 300s"
	fi
	elapsed=$(($(now) - start))
}

# The last "INFO: N processes: A kind, B kind." line of a log.
process_summary() {
	line=$(grep -E '^INFO: [0-9]+ process(es)?[:.]' "$tmp/logs/$1" | tail -n 1)
	[ -n "$line" ] || fail "no process summary line ('INFO: N processes: ...') in the output of $1"
	echo "$line"
}

# spawns SUMMARY: one "count kind" line per kind of spawn.
spawns() {
	echo "$1" | sed -e 's/^INFO: [0-9]* process[es]*[:.] *//' -e 's/\.$//' | tr ',' '\n' |
		sed -e 's/^ *//' -e '/^$/d'
}

# count SUMMARY KIND: how many spawns of that kind.
count() {
	spawns "$1" | awk -v kind="$2" '{ n = $1; sub(/^[0-9]+ /, ""); if ($0 == kind) total += n } END { print total + 0 }'
}

# only SUMMARY KIND...: fails unless every spawn is internal or of a KIND.
only() {
	summary=$1
	shift
	spawns "$summary" | while read -r n kind; do
		ok=""
		for k in internal "$@"; do
			[ "$kind" != "$k" ] || ok=1
		done
		[ -n "$ok" ] || {
			echo "e2e/bazel: FAIL: $n spawn(s) ran as '$kind', not $*: $summary" >&2
			exit 1
		}
	done || exit 1
}

# Checks the outputs Bazel left in bazel-bin.
check_outputs() {
	bb="$tmp/ws/bazel-bin"
	check_file() { # PATH CONTENT
		[ -f "$bb/$1" ] || fail "$1 missing from bazel-bin"
		got=$(cat "$bb/$1")
		[ "$got" = "$2" ] || fail "$1 is '$got', want '$2'"
	}
	check_file a/b/out/x.txt "x from a/b/input.txt"
	check_file a/b/out/deep/y.txt "deep output of //a/b:gen"
	check_file c/combined/z.txt "$(printf 'X FROM A/B/INPUT.TXT\nDEEP OUTPUT OF //A/B:GEN\nLINES: 2')"
	[ -x "$bb/hello/hello" ] || fail "hello/hello missing from bazel-bin or not executable"
	got=$("$bb/hello/hello" e2e) || fail "bazel-bin/hello/hello exited with $?"
	[ "$got" = "hello from a remote compile, e2e!" ] || fail "bazel-bin/hello/hello printed '$got'"
	say "$1: outputs right (genrule outputs, cc_binary on the host: '$got')"
}

total_start=$(now)
targets="//..."
test_target="//tests:outputs_test"

say "cold build: every spawn must run remotely"
# --keep_going: a failure report names every failing action, not the first.
bazel_cmd build1 build $build_opts --keep_going -- $targets
build1=$(process_summary build1)
say "build1 (${elapsed}s): $build1"
only "$build1" remote
remote1=$(count "$build1" remote)
[ "$remote1" -gt 0 ] || fail "build1 ran no remote spawn: $build1"

bazel_cmd test1 test $build_opts -- $test_target
test1=$(process_summary test1)
say "test1 (${elapsed}s): $test1"
only "$test1" remote
test_remote1=$(count "$test1" remote)
[ "$test_remote1" -gt 0 ] || fail "test1 ran the test without a remote spawn: $test1"
check_outputs "cold build"

say "bazel clean, then again: every spawn must be a remote cache hit"
bazel_cmd clean clean
bazel_cmd build2 build $build_opts -- $targets
build2=$(process_summary build2)
say "build2 (${elapsed}s): $build2"
only "$build2" "remote cache hit"
hits2=$(count "$build2" "remote cache hit")
[ "$hits2" -eq "$remote1" ] || fail "build2 had $hits2 remote cache hits, build1 ran $remote1 remote spawns: $build2"

bazel_cmd test2 test $build_opts -- $test_target
test2=$(process_summary test2)
say "test2 (${elapsed}s): $test2"
only "$test2" "remote cache hit"
hits_test2=$(count "$test2" "remote cache hit")
[ "$hits_test2" -eq "$test_remote1" ] || fail "test2 had $hits_test2 remote cache hits, test1 ran $test_remote1 remote spawns: $test2"

# --nocache_test_results makes Bazel run the test spawn itself again
# (it does not accept a cached result for it): remotely, never locally.
bazel_cmd test3 test $build_opts --nocache_test_results -- $test_target
test3=$(process_summary test3)
say "test3 (${elapsed}s): $test3"
only "$test3" remote "remote cache hit"
reran3=$(count "$test3" remote)
[ "$reran3" -ge 1 ] || fail "test3 (--nocache_test_results) did not run the test remotely again: $test3"
check_outputs "after clean"

say "PASS in $(($(now) - total_start))s: build $remote1 remote spawns, after clean $hits2 remote cache hits; test $test_remote1 remote spawns, after clean $hits_test2 cache hits, with --nocache_test_results $reran3 run again remotely"
