#!/bin/sh
# Writes the run script BitBake would write for one task of a recipe
# (temp/run.do_<task>): an exit handler, `set -e`, the exported
# variables, the shell functions with BitBake's own variables expanded,
# then the task's [cleandirs]/[dirs] handling, `cd` and the call.
#
# Usage: emit-runscript.sh TOPDIR RECIPE TASK
#   TOPDIR  the build directory (= the worker's --exec-root-path)
#   RECIPE  a recipe file (recipes/<pn>/<pn>.bb.sh)
#   TASK    configure, compile, install, populate_sysroot, deploy, ...
# PARALLEL_MAKE in the environment overrides the default (-j 2).
#
# Two differences from BitBake, both part of the workspace contract
# (WORKSPACE.md): the task's [cleandirs] and [dirs] are done by the
# script itself (BitBake's Python does them before the script runs,
# and that Python does not run on the worker), and the script has no
# PID suffix (run.do_compile, not run.do_compile.1234), so identical
# tasks stay identical actions.
set -eu

if [ $# -ne 3 ]; then
	echo "usage: $0 TOPDIR RECIPE TASK" >&2
	exit 2
fi
TOPDIR=$1
recipe=$2
task=$3
here=$(cd "$(dirname "$0")" && pwd)
classes="$here/classes/base.bbclass.sh"

# The recipe sets PN and PV, bitbake.conf derives the paths from them,
# and the recipe is read again so that its own values win (the first
# time, its references to those paths are still unset).
set +u
. "$recipe"
set -u
. "$here/conf/bitbake.conf"
. "$recipe"
if [ "$task" = compile ]; then
	EXTRA_OEMAKE="$PARALLEL_MAKE${EXTRA_OEMAKE:+ $EXTRA_OEMAKE}"
fi
BB_EXPORTS="$BB_EXPORTS ${RECIPE_EXPORTS:-}"
BB_VARS="$BB_VARS ${RECIPE_VARS:-}"

# Task flags: OE-core's defaults, which a recipe overrides by setting
# do_<task>_dirs / do_<task>_cleandirs.
case $task in
configure) dirs=$B cleandirs=$B ;;
compile | install) dirs=$B cleandirs= ;;
populate_sysroot) dirs=$SYSROOT_DESTDIR cleandirs=$SYSROOT_DESTDIR ;;
deploy) dirs=$DEPLOYDIR cleandirs=$DEPLOYDIR ;;
*) dirs=$B cleandirs= ;;
esac
[ "$task" = install ] && cleandirs=$D
eval "dirs=\${do_${task}_dirs-\$dirs}"
eval "cleandirs=\${do_${task}_cleandirs-\$cleandirs}"

# BitBake quotes exported values in double quotes.
quote() {
	printf '%s' "$1" | sed -e 's/[\\"$`]/\\&/g'
}

cat <<'EOF'
#!/bin/sh

# Emit a useful diagnostic if something fails:
bb_sh_exit_handler() {
    ret=$?
    if [ "$ret" != 0 ]; then
        echo "WARNING: exit code $ret from a shell command."
    fi
    exit $ret
}
trap 'bb_sh_exit_handler' 0
set -e
EOF
for v in $BB_EXPORTS; do
	eval "value=\${$v}"
	printf 'export %s="%s"\n' "$v" "$(quote "$value")"
done
echo

# Functions, with ${VAR} of BitBake variables replaced by their values
# (shell variables such as $1 or ${ret} are left alone).
for v in $BB_VARS; do
	eval "export BBVAR_$v=\${$v}"
done
awk -v names="$BB_VARS" '
BEGIN { n = split(names, list, " "); for (i = 1; i <= n; i++) known[list[i]] = 1 }
/^[A-Za-z_][A-Za-z0-9_]*\(\) \{$/ { infn = 1 }
infn {
	line = $0; out = ""
	while (match(line, /\$\{[A-Za-z_][A-Za-z0-9_]*\}/)) {
		name = substr(line, RSTART + 2, RLENGTH - 3)
		value = (name in known) ? ENVIRON["BBVAR_" name] : substr(line, RSTART, RLENGTH)
		out = out substr(line, 1, RSTART - 1) value
		line = substr(line, RSTART + RLENGTH)
	}
	print out line
	if ($0 ~ /^\}$/) { infn = 0; print "" }
}' "$classes" "$recipe"

echo "# [cleandirs] and [dirs] of do_$task (done by BitBake's Python locally)"
for d in $cleandirs; do
	printf "rm -rf '%s'\n" "$d"
done
last=
for d in $dirs; do
	printf "mkdir -p '%s'\n" "$d"
	last=$d
done
printf "cd '%s'\n" "$last"
printf 'do_%s\n' "$task"
cat <<'EOF'

# cleanup
ret=$?
trap '' 0
exit $ret
EOF
