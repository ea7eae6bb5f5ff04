# libshout: a C library built against libgreet from the recipe sysroot
# (found with pkg-config).
SUMMARY="Shouting library"
PN="libshout"
PV="1.0"
DEPENDS="libgreet"

do_configure() {
	autotools_do_configure
}

do_compile() {
	autotools_do_compile
}

do_install() {
	autotools_do_install
}
