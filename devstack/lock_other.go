//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package devstack

// lockDataDir does not lock where syscall.Flock is missing (Windows,
// Solaris, AIX, …): two dev stacks on one data directory go undetected
// there.
func lockDataDir(string) (func(), error) { return func() {}, nil }
