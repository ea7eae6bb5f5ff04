package child

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// A slot's actions share its PID 1's network namespace, one after
// another, rather than each getting a new one: creating and freeing a
// network namespace was a fifth of a trivial action's CPU, half of it
// in the kernel's workers after the action (BENCHMARKS.md). It is
// made with PID 1, owned by PID 1's user namespace, and has only lo.
//
// What an action could leave there for the next: its configuration
// (interfaces, addresses, routes, netfilter, /proc/sys/net) it cannot
// change, lacking CAP_NET_ADMIN in PID 1's user namespace (proc's
// sysctl check gives write access to nobody else, whoever owns the
// file). Its sockets close with its processes, which PID 1 kills; what
// TCP keeps after a socket is closed, TIME_WAIT entries and per-peer
// metrics, this namespace does not keep (prepareNetwork); and PID 1
// checks that no socket at all is left before it takes another action
// (networkIsEmpty), or retires. What carries over are the counters
// (/proc/net/snmp, /proc/net/dev), as the host's /proc/loadavg and
// /proc/meminfo do for every action.

// networkSysctls are set in the slot's network namespace when PID 1
// starts: TCP keeps no TIME_WAIT entry (a closed connection would hold
// its port for a minute into the next action) and saves no metrics of
// its peers for the next connection.
var networkSysctls = map[string]string{
	"net/ipv4/tcp_max_tw_buckets":  "0",
	"net/ipv4/tcp_no_metrics_save": "1",
}

// prepareNetwork brings lo up in PID 1's network namespace and sets
// networkSysctls there (PID 1 is root of its owner).
func prepareNetwork() error {
	if err := bringUpLoopback(); err != nil {
		return err
	}
	for name, value := range networkSysctls {
		if err := WriteFileDirect("/proc/sys/"+name, []byte(value)); err != nil {
			return fmt.Errorf("network namespace: set %s: %w", name, err)
		}
	}
	return nil
}

// networkIsEmpty reports whether no socket is left in PID 1's network
// namespace, waiting a little for the kernel to finish closing what an
// action's killed processes had open (a loopback connection's last
// packets, sockets passed over Unix sockets, which the kernel collects
// in the background).
func networkIsEmpty() error {
	var used int
	var err error
	empty := waitUntil(100*time.Millisecond, func() bool {
		used, err = socketsInUse()
		return err != nil || used == 0
	})
	if err != nil {
		return err
	}
	if !empty {
		return fmt.Errorf("%d sockets are left in the network namespace", used)
	}
	return nil
}

// socketsInUse counts, from /proc/net/sockstat, the sockets of the
// reader's network namespace ("sockets: used", every family) and TCP's
// TIME_WAIT entries, which that count leaves out (none are kept here,
// see networkSysctls: this is the second guard).
func socketsInUse() (int, error) {
	data, err := ReadFileDirect("/proc/self/net/sockstat")
	if err != nil {
		return 0, fmt.Errorf("read sockstat: %w", err)
	}
	used, timeWait := -1, -1
	for _, line := range bytes.Split(data, []byte{'\n'}) {
		fields := bytes.Fields(line)
		switch {
		case len(fields) == 3 && string(fields[0]) == "sockets:" && string(fields[1]) == "used":
			used, _ = strconv.Atoi(string(fields[2]))
		case len(fields) > 6 && string(fields[0]) == "TCP:" && string(fields[5]) == "tw":
			timeWait, _ = strconv.Atoi(string(fields[6]))
		}
	}
	if used < 0 || timeWait < 0 {
		return 0, errors.New("sockstat: no sockets or TCP line")
	}
	return used + timeWait, nil
}

// bringUpLoopback sets IFF_UP on lo, the only interface of a new
// network namespace, so builds that talk to themselves over 127.0.0.1
// work while nothing else is reachable.
func bringUpLoopback() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: socket: %w", err)
	}
	defer unix.Close(fd)
	ifreq, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifreq); err != nil {
		return fmt.Errorf("loopback: get flags: %w", err)
	}
	ifreq.SetUint16(ifreq.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifreq); err != nil {
		return fmt.Errorf("loopback: set up: %w", err)
	}
	return nil
}
