//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package devstack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFile is the file in a data directory that one dev stack at a time
// holds an exclusive flock on.
const lockFile = "chronicle-dev.lock"

// lockDataDir takes the data directory for this process, creating it if
// need be, and returns the function that gives it back. The lock is an
// exclusive flock(2) on dir/chronicle-dev.lock: the kernel drops it when
// the process ends, however it ends, so a crash leaves no stale lock. The
// file holds the pid of the holder, for the message to whoever is refused.
func lockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the data directory: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the lock file of the data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is held by another chronicle dev%s: stop that one, or give this one another directory with --data-dir (or --in-memory)",
				ErrDataDirInUse, dir, holder)
		}
		return nil, fmt.Errorf("locking the data directory %s: %w", dir, err)
	}
	// Only the holder writes the pid, so a refused process never clobbers it.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		// The file stays: removing it would race with a dev that opened it
		// and waits to lock it.
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
