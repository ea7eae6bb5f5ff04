# libgreet: a C library, static and shared, with a pkg-config file.
# inherit autotools: configure, compile and install come from the class.
SUMMARY="Greeting library"
PN="libgreet"
PV="1.0"
DEPENDS=""

do_configure() {
	autotools_do_configure
}

do_compile() {
	autotools_do_compile
}

do_install() {
	autotools_do_install
}
