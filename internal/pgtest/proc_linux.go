//go:build linux

package pgtest

import "syscall"

// sysProcAttr runs the child as cred (when not nil) and makes the kernel kill
// it when the test binary dies (a timeout panic, a kill). Go sets the death
// signal after switching users, which would otherwise clear it.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
}
