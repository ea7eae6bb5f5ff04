package sandbox

import (
	"fmt"
	"os"

	"github.com/bitzel/bitzel-worker/sandbox/child"
	"golang.org/x/sys/unix"
)

// readReport reads one action's messages from PID 1's control socket
// (SOCK_SEQPACKET: one message per read): the descriptor of the disk
// budget's tmpfs if PID 1 sent one, then the Status. It returns at the
// Status, or with no status when PID 1 closed the socket (it died).
func readReport(f *os.File) (status []byte, diskBudget *os.File) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, err := receive(f, buf, oob)
		if err != nil || (n == 0 && oobn == 0) {
			return nil, diskBudget
		}
		if fds, _ := child.ParseRights(oob[:oobn]); len(fds) > 0 {
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
		return append([]byte(nil), buf[:n]...), diskBudget
	}
}

// awaitReleased reads the message PID 1 sends once the action's
// mounts are gone; false if anything else comes (PID 1 died).
func awaitReleased(f *os.File) bool {
	buf := make([]byte, 16)
	n, _, err := receive(f, buf, nil)
	return err == nil && n == 1 && buf[0] == child.ReleasedMessage
}

// receive reads one message of the control socket, waiting for it: the
// descriptor is blocking (a socketpair end, which os.NewFile does not
// give to the poller).
func receive(f *os.File, buf, oob []byte) (n, oobn int, err error) {
	for {
		n, oobn, _, _, err = unix.Recvmsg(int(f.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			return n, oobn, err
		}
	}
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
