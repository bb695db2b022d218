package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTheBinaryServesTheExampleDomains builds the shipped binary and asks
// it what it serves and what version it is.
func TestTheBinaryServesTheExampleDomains(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "chronicle")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--help").Output()
	if err != nil || !strings.Contains(string(out), "Aggregate types: order and ballot (by default on topic prefixes orders=order,ballots=ballot)") {
		t.Errorf("chronicle --help: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "chronicle ") || !strings.Contains(string(out), "(go1.") {
		t.Errorf("chronicle --version: %v\n%s", err, out)
	}
}
