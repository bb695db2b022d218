package snapshots

import "testing"

func TestMemoryConformance(t *testing.T) {
	runConformance(t, backend{
		open: func(t *testing.T) store {
			m := NewMemory()
			t.Cleanup(func() { m.Close() })
			return m
		},
	})
}
