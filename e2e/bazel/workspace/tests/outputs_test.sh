#!/bin/sh
set -eu
root="$TEST_SRCDIR/$TEST_WORKSPACE"
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "running in $(pwd) on $(hostname) as uid $(id -u)"
x=$(cat "$root/a/b/out/x.txt")
[ "$x" = "x from a/b/input.txt" ] || fail "a/b/out/x.txt is '$x'"
y=$(cat "$root/a/b/out/deep/y.txt")
[ "$y" = "deep output of //a/b:gen" ] || fail "a/b/out/deep/y.txt is '$y'"
z=$(cat "$root/c/combined/z.txt")
want=$(printf 'X FROM A/B/INPUT.TXT\nDEEP OUTPUT OF //A/B:GEN\nLINES: 2')
[ "$z" = "$want" ] || fail "c/combined/z.txt is '$z'"
greeting=$("$root/hello/hello" test)
[ "$greeting" = "hello from a remote compile, test!" ] || fail "hello printed '$greeting'"
echo "all outputs right"
