//go:build !linux

package proctest

import "syscall"

// sysProcAttr sets nothing: only Linux has a parent-death signal.
func sysProcAttr() *syscall.SysProcAttr { return nil }
