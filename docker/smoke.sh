#!/bin/sh
# The Compose cluster end to end, with a Docker engine and Compose v2:
# builds the worker image, brings bb_storage + bb_scheduler + two
# workers up, checks both workers registered and are healthy, submits an
# action and checks it ran sandboxed on a worker, then stops the workers
# while an action runs and checks that they drained: the action
# finished and was reported, and each worker exited 0. The cluster and
# its volumes are removed at the end, whatever happened.
#
#   docker/smoke.sh
#
# Environment:
#   BITZEL_BB_BINARIES  a directory with bb_storage and bb_scheduler
#                       binaries (static, linux/amd64): images are made
#                       from them instead of pulling Buildbarn's from
#                       ghcr.io (for a machine without registry access)
#   GO_VERSION          the golang image tag the build stage uses
#                       (default: the Dockerfile's)
#   SMOKE_PROJECT       the Compose project name (default bitzel-smoke)
#   DOCKER_HOST         as for docker itself
set -eu

cd "$(dirname "$0")/.."
project=${SMOKE_PROJECT:-bitzel-smoke}
compose() { docker compose -p "$project" -f docker/compose.yaml "$@"; }
say() { echo "== smoke: $*"; }
die() {
	echo "== smoke: FAILED: $*" >&2
	exit 1
}

command -v docker >/dev/null || die "no docker command"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info)"
version=$(docker compose version --short 2>/dev/null) || die "Compose v2 is required (the docker compose plugin); Debian's docker-compose 1.x rejects compose.yaml's cgroup: setting"
case $version in
v2.* | 2.*) ;;
*) die "Compose v2 is required, found $version" ;;
esac
say "engine $(docker version --format '{{.Server.Version}}'), compose $version"

work=$(mktemp -d)
cleanup() {
	status=$?
	if [ $status != 0 ]; then
		compose logs --no-color --tail 50 >&2 || true
	fi
	compose down --volumes --timeout 5 >/dev/null 2>&1 || true
	rm -rf "$work"
	exit $status
}
trap cleanup EXIT INT TERM

if [ -n "${BITZEL_BB_BINARIES:-}" ]; then
	for binary in bb_storage bb_scheduler; do
		[ -x "$BITZEL_BB_BINARIES/$binary" ] || die "$BITZEL_BB_BINARIES/$binary: not an executable"
		mkdir -p "$work/$binary"
		cp "$BITZEL_BB_BINARIES/$binary" "$work/$binary/"
		# The worker image's userland: any base that runs a static
		# binary would do, and this one is there already.
		printf 'FROM bitzel-worker:dev\nUSER root\nCOPY %s /app/%s\nENTRYPOINT ["/app/%s"]\n' \
			"$binary" "$binary" "$binary" >"$work/$binary/Dockerfile"
	done
fi

say "building bitzel-worker:dev"
build_args="--build-arg COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
[ -n "${GO_VERSION:-}" ] && build_args="$build_args --build-arg GO_VERSION=$GO_VERSION"
# shellcheck disable=SC2086 # build_args is a list of words
compose build $build_args worker-0
docker run --rm bitzel-worker:dev version
if [ -n "${BITZEL_BB_BINARIES:-}" ]; then
	docker build -q -t bitzel-smoke/bb-storage "$work/bb_storage" >/dev/null
	docker build -q -t bitzel-smoke/bb-scheduler "$work/bb_scheduler" >/dev/null
	export BB_STORAGE_IMAGE=bitzel-smoke/bb-storage BB_SCHEDULER_IMAGE=bitzel-smoke/bb-scheduler
fi

say "bringing the cluster up"
compose up --detach --no-build

# metric WORKER NAME: the value of a worker's metric, from inside its
# container (no published port needed).
metric() {
	port=$((9984 + ${1#worker-}))
	compose exec -T "$1" curl -fsS "http://localhost:$port/metrics" 2>/dev/null |
		awk -v name="$2" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }'
}
# wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds.
wait_for() {
	deadline=$(($(date +%s) + $1))
	description=$2
	shift 2
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || die "$description: not within the time allowed"
		sleep 1
	done
}
registered() {
	for w in worker-0 worker-1; do
		n=$(metric "$w" bitzel_cluster_synchronizations_total)
		[ "${n%.*}" -gt 0 ] 2>/dev/null || return 1
	done
}
wait_for 120 "both workers synchronizing with the scheduler" registered
healthy() {
	for w in worker-0 worker-1; do
		[ "$(docker inspect --format '{{.State.Health.Status}}' "$(compose ps -q "$w")")" = healthy ] || return 1
	done
}
# The first health check runs after compose.yaml's interval (30s).
wait_for 120 "both workers' health checks passing" healthy
say "both workers registered and healthy"

# submit ARGS...: bitzel-worker submit from the worker image, on the
# cluster's network, against bb_storage's frontend.
network="${project}_default"
submit() {
	docker run --rm --network "$network" bitzel-worker:dev submit --quiet --remote grpc://storage:8980 "$@"
}

say "submitting an action"
out=$(submit --skip-cache -- /bin/sh -c 'echo hostname=$(hostname); echo pid1=$(cat /proc/1/comm); echo uid=$(id -u); echo net=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " \n"); echo cwd=$(pwd)')
echo "$out" | sed 's/^/   /'
echo "$out" | grep -qx 'hostname=localhost' || die "the action did not run with the sandbox's hostname"
# PID 1 is the sandbox's init; its comm may read "exe" (started through /proc/self/exe), so it is printed, not checked.
echo "$out" | grep -qx 'uid=0' || die "the action is not root inside its user namespace"
echo "$out" | grep -qx 'net=lo' || die "the action sees network interfaces other than lo"
echo "$out" | grep -qx 'cwd=/bitzel/execroot' || die "the action did not run in the exec root"
ran_on=$(submit --skip-cache --json -- /bin/true | sed -n 's/.*"worker": *"\(.*\)",*$/\1/p')
case $ran_on in
*worker-0* | *worker-1*) say "ran sandboxed on $ran_on" ;;
*) die "ExecutedActionMetadata.worker is '$ran_on', not one of the workers" ;;
esac
compose logs --no-color worker-0 worker-1 | grep -q 'sandbox: rootless: action uid 0 = host uid 999' ||
	die "the workers' sandboxes are not rootless"

say "stopping the workers while an action runs"
submit --skip-cache -- /bin/sh -c 'sleep 15; echo finished' >"$work/long.out" 2>&1 &
long=$!
executing() {
	total=0
	for w in worker-0 worker-1; do
		n=$(metric "$w" bitzel_cluster_slots_executing)
		total=$((total + ${n%.*}))
	done
	[ "$total" -gt 0 ]
}
wait_for 60 "the long action executing" executing
compose stop --timeout 120 worker-0 worker-1
wait "$long" || die "the action running during the stop failed: $(cat "$work/long.out")"
grep -qx finished "$work/long.out" || die "the action running during the stop did not finish: $(cat "$work/long.out")"
for w in worker-0 worker-1; do
	code=$(docker inspect --format '{{.State.ExitCode}}' "$(compose ps -aq "$w")")
	[ "$code" = 0 ] || die "$w exited $code after SIGTERM, not 0"
	compose logs --no-color "$w" | grep -q 'drained' || die "$w did not log its drain"
done
say "the running action finished during the drain; both workers exited 0"
say "PASSED"
