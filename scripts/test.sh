#!/bin/sh
# The test suite, from a fresh Debian machine: installs what the tests
# need, then runs every package's tests as root and again as an
# ordinary user (rootless sandboxes), and checks formatting and vet.
# Usage: sudo scripts/test.sh
set -eu

cd "$(dirname "$0")/.."
repo=$(pwd)
export PATH="/usr/local/go/bin:$PATH"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
test_user=bzltest

if [ "$(id -u)" != 0 ]; then
	echo "scripts/test.sh installs packages and creates a test user: run it as root" >&2
	exit 2
fi

echo "== installing test dependencies"
# bubblewrap: the benchmarks' baseline; busybox-static: a hermetic
# userland layer for the exec-root-as-root-fs test; strace: an action
# tries to ptrace the worker; chromium and a font: the status page's
# browser test (e2e/statuspage_test.go).
packages="bubblewrap busybox-static strace chromium fonts-dejavu-core"
missing=""
for p in $packages; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
id "$test_user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$test_user"
go mod download
# gotestsum prints one line per test (PASS, FAIL, SKIP) and the output
# of failures, so a skipped or missing test shows in the log; plain
# go test -v is the fallback.
gotestsum_version=v1.13.0
gotestsum="$(go env GOPATH)/bin/gotestsum"
if ! "$gotestsum" --version 2>/dev/null | grep -q "$gotestsum_version"; then
	go install "gotest.tools/gotestsum@$gotestsum_version" || gotestsum=""
fi
# go_test PKG... runs go test with one line per test.
go_test() {
	if [ -n "$gotestsum" ]; then
		"$gotestsum" --format testname -- -count=1 "$@"
	else
		go test -v -count=1 "$@"
	fi
}
# test_binary PKG CMD... runs a test binary built with go test -c
# (CMD runs it, with -test.v=test2json appended) the same way.
test_binary() {
	pkg=$1
	shift
	if [ -n "$gotestsum" ]; then
		"$gotestsum" --format testname --raw-command -- go tool test2json -t -p "$pkg" "$@" -test.v=test2json
	else
		"$@" -test.v
	fi
}

echo "== gofmt, go vet and staticcheck"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "not gofmt-clean:" $unformatted >&2
	exit 1
fi
go vet ./...
# staticcheck.conf says which checks and why.
staticcheck_version=v0.8.2
staticcheck="$(go env GOPATH)/bin/staticcheck"
if ! "$staticcheck" -version 2>/dev/null | grep -q "${staticcheck_version#v}"; then
	go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
fi
"$staticcheck" ./...

echo "== build"
# -buildvcs=false (the rootless copy has no .git): the commit comes in
# through the linker, for `bitzel-worker version`.
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
go build -ldflags "-X main.commit=$commit" -o bin/ ./cmd/...
# A 32-bit binary for the seccomp filter's i386 section
# (sandbox TestSeccompCoversI386), built here because the rootless run
# has no Go.
GOARCH=386 CGO_ENABLED=0 go build -o bin/seccomp-i386-probe ./sandbox/testdata/i386probe

echo "== tests as root"
# The e2e tests use the binaries just built rather than building
# their own.
BITZEL_BIN_DIR="$repo/bin" go_test ./...
sh e2e/bazel/run.sh # real Bazel 4.2.3 against serve: every spawn remote, then all remote cache hits
BITZEL_BIN_DIR="$repo/bin" sh e2e/bitbake/busybox.sh # Debian busybox 1.35 do_configure/compile/install through serve: byte-identical to a local build, wall times

echo "== fuzzing (bounded; the committed corpora also ran as tests above)"
for target in FuzzParseLayersProperty FuzzDirectoryValidation FuzzCommandAndAction FuzzWireDecoders; do
	# In the package whose tests define it.
	go test -run XXX -fuzz "^$target\$" -fuzztime 20s "./$(dirname "$(grep -rl --include='*_test.go' "^func $target(" . | head -1 | cut -c3-)")"
done

echo "== tests as the ordinary user $test_user (rootless)"
# Test binaries are built here and run as the user from a copy of the
# tree it can read, so the user needs neither Go nor the module cache.
work=$(mktemp -d /tmp/bitzel-rootless-XXXXXX)
# A small file system of the user's own, for the disk-full test (as
# root the test mounts one itself).
small_fs=$(mktemp -d /tmp/bitzel-small-fs-XXXXXX)
mount -t tmpfs -o "size=96m,mode=0755,uid=$(id -u "$test_user")" tmpfs "$small_fs"
# The BitBake-style builds live outside /tmp (the sandbox has its own
# there); /var/tmp is not world-writable on every image.
scratch=$(mktemp -d /var/tmp/bitzel-rootless-scratch-XXXXXX)
chown "$test_user" "$scratch"
chmod 755 "$scratch"
trap 'umount "$small_fs"; rmdir "$small_fs"; rm -rf "$work" "$scratch"' EXIT
chmod 755 "$work"
tar -C "$repo" --exclude=.git --exclude=bin -cf - . | tar -C "$work" -xf -
mkdir -p "$work/bin"
cp bin/* "$work/bin/"
chmod -R a+rX "$work"
status=0
for pkg in $(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./...); do
	rel=${pkg#github.com/bitzel/bitzel-worker}
	rel=${rel#/}
	name=$(echo "${rel:-root}" | tr / _)
	go test -c -o "$work/$name.test" "./$rel"
	echo "-- $pkg"
	if ! (cd "$work/$rel" && test_binary "$pkg" runuser -u "$test_user" -- env HOME="/home/$test_user" BITZEL_BIN_DIR="$work/bin" BITZEL_SMALL_FS="$small_fs" BITZEL_SCRATCH_DIR="$scratch" "$work/$name.test" -test.count=1); then
		status=1
	fi
done
exit $status
