//go:build !linux

package cli

import "os/exec"

// setParentDeathSignal does nothing: only Linux has a parent-death signal.
// A bench stopped with Ctrl-C still stops its broker.
func setParentDeathSignal(*exec.Cmd) {}
