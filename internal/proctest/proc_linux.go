//go:build linux

package proctest

import "syscall"

// sysProcAttr makes the kernel kill the child when the test binary dies (a
// timeout panic, a kill), so that no program outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
