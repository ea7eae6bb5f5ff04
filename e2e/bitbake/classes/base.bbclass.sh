# Shell functions of OE-core's classes (logging, utils, base,
# autotools, staging) as BitBake writes them into run scripts. Bodies
# follow OE-core; where OE-core uses a tool the host may lack (cpio),
# the closest equivalent is used and says so.

bbnote() {
	echo "NOTE: $*"
}

bbwarn() {
	echo "WARNING: $*"
}

bbfatal() {
	echo "ERROR: $*"
	exit 1
}

bbfatal_log() {
	echo "ERROR: $*"
	exit 1
}

die() {
	bbfatal_log "$*"
}

oe_runmake_call() {
	bbnote ${MAKE} ${EXTRA_OEMAKE} "$@"
	${MAKE} ${EXTRA_OEMAKE} "$@"
}

oe_runmake() {
	oe_runmake_call "$@" || die "oe_runmake failed"
}

oe_runconf() {
	cfgscript="${S}/configure"
	if [ -x "$cfgscript" ] ; then
		bbnote "Running $cfgscript ${CONFIGUREOPTS} ${EXTRA_OECONF} $@"
		if ! $cfgscript ${CONFIGUREOPTS} ${EXTRA_OECONF} "$@"; then
			bbnote "The following config.log files may provide further information."
			bbfatal_log "configure failed"
		fi
	else
		bbfatal "no configure script found at $cfgscript"
	fi
}

autotools_do_configure() {
	oe_runconf
}

autotools_do_compile() {
	oe_runmake
}

autotools_do_install() {
	oe_runmake 'DESTDIR=${D}' install
}

# OE-core copies with `cpio --null -pdlu`; tar keeps the same modes and
# symlinks and is on every host.
sysroot_stage_dir() {
	src="$1"
	dest="$2"
	# if the src doesn't exist don't do anything
	if [ ! -d "$src" ]; then
		return
	fi
	mkdir -p "$dest"
	(cd "$src" && tar --sort=name -cf - .) | (cd "$dest" && tar --no-same-owner -xpf -)
}

sysroot_stage_dirs() {
	from="$1"
	to="$2"
	sysroot_stage_dir "$from${includedir}" "$to${includedir}"
	sysroot_stage_dir "$from${libdir}" "$to${libdir}"
	sysroot_stage_dir "$from${datadir}" "$to${datadir}"
}

sysroot_stage_all() {
	sysroot_stage_dirs ${D} ${SYSROOT_DESTDIR}
}

do_populate_sysroot() {
	sysroot_stage_all
}
