package aggregates_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/chronicle-es/chronicle/aggregates"
)

func TestNewCommandWithAPointerSaysToPassTheValue(t *testing.T) {
	d := tallyDef(t)
	_, err := d.NewCommand("t-1", &add{N: 1}, aggregates.Metadata{})
	if !errors.Is(err, aggregates.ErrUnknownCommandType) || !strings.Contains(err.Error(), "pass the value (aggregates_test.add{…}, not &aggregates_test.add{…})") {
		t.Errorf("NewCommand(&add{}): %v", err)
	}
	_, err = d.NewCommand("t-1", 42, aggregates.Metadata{})
	if !errors.Is(err, aggregates.ErrUnknownCommandType) || strings.Contains(err.Error(), "pointer") {
		t.Errorf("NewCommand(42): %v", err)
	}
	if _, err := d.NewCommand("t-1", add{N: 1}, aggregates.Metadata{}); err != nil {
		t.Errorf("NewCommand(add{}): %v", err)
	}
}
