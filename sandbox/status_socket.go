package sandbox

import (
	"fmt"
	"os"

	"github.com/bitzel/bitzel-worker/sandbox/child"
	"golang.org/x/sys/unix"
)

// The status channel from PID 1 is a SOCK_SEQPACKET socket pair rather
// than a pipe: besides the Status it carries, as its own message, the
// descriptor of the tmpfs that holds a budgeted action's upper
// directories (see child/disk_budget.go). Message boundaries keep the
// two apart.
func newStatusSocket() (r, w *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	// The worker only reads, PID 1 only writes.
	unix.Shutdown(fds[0], unix.SHUT_WR)
	unix.Shutdown(fds[1], unix.SHUT_RD)
	return os.NewFile(uintptr(fds[0]), "status"), os.NewFile(uintptr(fds[1]), "status"), nil
}

// readStatus reads until PID 1 closes its end: the Status message, and
// the tmpfs descriptor if PID 1 sent one (nil otherwise).
func readStatus(f *os.File) (status []byte, diskBudget *os.File) {
	conn, err := f.SyscallConn()
	if err != nil {
		return nil, nil
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		var n, oobn int
		var recvErr error
		// The descriptor is blocking (it was passed to the
		// launcher): each call reads one message.
		err := conn.Read(func(fd uintptr) bool {
			for {
				n, oobn, _, _, recvErr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
				if recvErr != unix.EINTR {
					return recvErr != unix.EAGAIN
				}
			}
		})
		if err != nil || recvErr != nil || (n == 0 && oobn == 0) {
			return status, diskBudget
		}
		if fds := parseRights(oob[:oobn]); len(fds) > 0 {
			for _, extra := range fds[1:] {
				unix.Close(extra)
			}
			if n == 1 && buf[0] == child.DiskBudgetMessage && diskBudget == nil {
				diskBudget = os.NewFile(uintptr(fds[0]), "disk budget")
				continue
			}
			unix.Close(fds[0])
			continue
		}
		status = append(status, buf[:n]...)
	}
}

func parseRights(oob []byte) []int {
	messages, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range messages {
		if rights, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, rights...)
		}
	}
	return fds
}

// budgetFull: the action's writes reached its disk budget (tmpfs
// counts pages, so a write that failed for lack of space leaves less
// than one page free), or ran out of inodes.
func budgetFull(f *os.File) bool {
	if f == nil {
		return false
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return false
	}
	return st.Bavail*uint64(st.Bsize) < 64<<10 || st.Ffree == 0
}

// UpperDirs returns where the upper directories of spec's mounts are
// now: in the disk budget's tmpfs when there is one.
func (r *Result) UpperDirs(spec *Spec) []string {
	uppers := make([]string, len(spec.Mounts))
	for i, m := range spec.Mounts {
		uppers[i] = m.UpperDir
		if r.DiskBudget != nil {
			uppers[i] = fmt.Sprintf("/proc/self/fd/%d/u%d", r.DiskBudget.Fd(), i)
		}
	}
	return uppers
}

// closeDiskBudget frees the tmpfs of a result that is not returned.
func (r *Result) closeDiskBudget() {
	if r.DiskBudget != nil {
		r.DiskBudget.Close()
		r.DiskBudget = nil
	}
}
