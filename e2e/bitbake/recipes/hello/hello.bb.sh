# hello: an application linked against libshout and libgreet (shared)
# and against their static archives (hello-static). Its do_install is
# a fakeroot task: root ownership and a setuid binary.
SUMMARY="Says hello, loudly"
PN="hello"
PV="1.0"
DEPENDS="libshout libgreet"

do_configure() {
	autotools_do_configure
}

do_compile() {
	autotools_do_compile
}

do_install() {
	bbnote "Installing hello setuid root and its configuration"
	install -d ${D}${bindir}
	install -m 0755 hello-static ${D}${bindir}/hello-static
	install -d -m 0750 -o root -g root ${D}${sysconfdir}/hello
	install -m 0640 ${S}/hello.conf ${D}${sysconfdir}/hello/hello.conf
	chown -R root:root ${D}
	# Last: a chown clears the setuid bit.
	install -m 4755 -o root -g root hello ${D}${bindir}/hello
}

do_deploy() {
	install -m 0755 ${D}${bindir}/hello-static ${DEPLOYDIR}/hello-static-${PV}
	ln -sf hello-static-${PV} ${DEPLOYDIR}/hello-static
}
