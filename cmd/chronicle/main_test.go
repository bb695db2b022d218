package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/chronicle-es/chronicle/internal/proctest"
)

// TestTheBinaryServesTheExampleDomains builds the shipped binary and asks
// it what it serves and what version it is.
func TestTheBinaryServesTheExampleDomains(t *testing.T) {
	bin := proctest.Build(t, ".", "chronicle")
	out, err := exec.Command(bin, "--help").Output()
	if err != nil || !strings.Contains(string(out), "Aggregate types: order and ballot (by default on topic prefixes orders=order,ballots=ballot)") {
		t.Errorf("chronicle --help: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "chronicle ") || !strings.Contains(string(out), "(go1.") {
		t.Errorf("chronicle --version: %v\n%s", err, out)
	}
}
