//go:build !linux

package pgtest

import "syscall"

// sysProcAttr runs the child as cred when not nil; only Linux can tie a
// child's life to its parent.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	if cred == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: cred}
}
