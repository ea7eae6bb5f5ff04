#!/bin/sh
# Runs every bitzel-bench workload against a fresh `bitzel-worker serve`
# and its baselines, then draws bench/scaling.png. Arguments are passed
# to bitzel-bench (e.g. --quick, --only trivial,throughput).
#
#   sudo bench/run.sh            # as root: installs what it lacks
#   bench/run.sh                 # as a user, once bwrap and
#                                # python3-matplotlib are installed
#
# Results: bench/out/results.{md,csv}; a full run also copies them to
# bench/results.{md,csv}, next to the plot drawn from them.
set -eu
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

need=""
command -v bwrap >/dev/null 2>&1 || need="$need bubblewrap"
/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1 || need="$need python3-matplotlib"
if [ -n "$need" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "run.sh: install$need first (apt-get install$need), or run as root" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need
fi

go build -o bench/out/bin/ ./cmd/bitzel-worker ./cmd/bitzel-sandbox-init ./bench/cmd/bitzel-bench

# Figures are ratios against baselines from the same run, but a busy
# machine still skews them (the worker and its baselines compete with
# other jobs differently): say so.
load=$(cut -d' ' -f1 /proc/loadavg)
if [ "$(echo "$load" | awk '{print ($1 > 0.7)}')" = 1 ]; then
	echo "run.sh: load average is $load; figures from a busy machine are noisy" >&2
fi

# As root, everything the run writes (serve's data directory and the
# baselines' copies) goes to a fresh ext4 file system on a loop device:
# on a long-used disk, file creation costs from 0.1 to 0.9 ms depending
# on the block group a directory lands in, which would favour whichever
# side got the emptier group. BENCH_FRESH_FS=0 uses $TMPDIR instead.
work=""
if [ "$(id -u)" -eq 0 ] && [ "${BENCH_FRESH_FS:-1}" != 0 ]; then
	img=/var/tmp/bitzel-bench.img
	work=$(mktemp -d /var/tmp/bitzel-bench-mnt.XXXXXX)
	truncate -s 32G "$img"
	mkfs.ext4 -q -F "$img"
	mount -o loop "$img" "$work"
	chmod 755 "$work"
	trap 'umount "$work"; rmdir "$work"; rm -f "$img"' EXIT
fi

bench/out/bin/bitzel-bench --bin bench/out/bin --out bench/out ${work:+--work "$work"} "$@"

if [ $# -eq 0 ]; then
	cp bench/out/results.csv bench/results.csv
	cp bench/out/results.md bench/results.md
	/usr/bin/python3 bench/plot.py bench/results.csv bench/scaling.png
else
	/usr/bin/python3 bench/plot.py bench/out/results.csv bench/out/scaling.png || true
fi
