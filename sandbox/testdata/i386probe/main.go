// Command i386probe is built with GOARCH=386 for TestSeccompCoversI386:
// run in a sandbox on amd64, it makes its system calls through the
// i386 ABI, and prints "name result" for calls the default filter
// denies. A filter that refused the ABI outright would keep it from
// printing anything.
package main

import (
	"fmt"
	"syscall"
	"unsafe"
)

// i386 numbers the syscall package does not name.
const (
	sysIOURingSetup = 425
	sysClone3       = 435
)

func report(name string, errno syscall.Errno) {
	if errno == 0 {
		fmt.Println(name, "ok")
		return
	}
	fmt.Println(name, errnoName(errno))
}

func errnoName(errno syscall.Errno) string {
	switch errno {
	case syscall.EPERM:
		return "EPERM"
	case syscall.ENOSYS:
		return "ENOSYS"
	case syscall.EINVAL:
		return "EINVAL"
	case syscall.EFAULT:
		return "EFAULT"
	}
	return fmt.Sprintf("errno%d", int(errno))
}

func main() {
	fmt.Println("hello from i386")
	_, _, errno := syscall.RawSyscall(syscall.SYS_GETPID, 0, 0, 0)
	report("getpid", errno)
	keyType, description := []byte("user\x00"), []byte("bitzel-i386-probe\x00")
	payload := []byte("x")
	const keySpecSessionKeyring = ^uintptr(2) // -3
	_, _, errno = syscall.Syscall6(syscall.SYS_ADD_KEY, uintptr(unsafe.Pointer(&keyType[0])), uintptr(unsafe.Pointer(&description[0])), uintptr(unsafe.Pointer(&payload[0])), 1, keySpecSessionKeyring, 0)
	report("add_key", errno)
	const keyctlGetKeyringID = 0
	_, _, errno = syscall.Syscall(syscall.SYS_KEYCTL, keyctlGetKeyringID, keySpecSessionKeyring, 0)
	report("keyctl", errno)
	// Go's process has threads: without a filter the kernel answers
	// EINVAL, so EPERM is the filter's.
	_, _, errno = syscall.RawSyscall(syscall.SYS_UNSHARE, syscall.CLONE_NEWUSER, 0, 0)
	report("unshare_user", errno)
	// CLONE_THREAD with CLONE_NEWUSER is EINVAL in the kernel: no
	// child can start whatever the filter does.
	_, _, errno = syscall.RawSyscall(syscall.SYS_CLONE, syscall.CLONE_NEWUSER|syscall.CLONE_THREAD|syscall.CLONE_SIGHAND|syscall.CLONE_VM, 0, 0)
	report("clone_user", errno)
	// NULL arguments: EFAULT or EINVAL when the calls are allowed.
	_, _, errno = syscall.RawSyscall(sysClone3, 0, 0, 0)
	report("clone3", errno)
	_, _, errno = syscall.RawSyscall(sysIOURingSetup, 1, 0, 0)
	report("io_uring_setup", errno)
}
