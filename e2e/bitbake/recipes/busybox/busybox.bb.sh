# busybox: Debian's busybox 1.35 source package (do_fetch and do_unpack
# are `apt-get source busybox` on the client, see ../../busybox.sh),
# configured with its defconfig and built out of tree with the host gcc.
SUMMARY="Tiny versions of many common UNIX utilities in a single small executable"
PN="busybox"
PV="1.35.0"
DEPENDS=""

# Kbuild out of tree: the sources stay untouched, everything goes to B.
EXTRA_OEMAKE="-C ${S} O=${B}"

do_configure() {
	oe_runmake defconfig
}

do_compile() {
	oe_runmake
}

do_install() {
	oe_runmake CONFIG_PREFIX=${D} install
}
