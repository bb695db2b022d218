package processor

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// partition is one assigned commands partition: its aggregate state and
// its lifecycle (restoring, restored, stopped, closed). Only one goroutine
// uses it at a time: its restore, then one worker per batch, then the main
// loop between transactions.
type partition struct {
	b        *binding
	id       int32
	st       *aggState
	restored atomic.Bool
	stopped  atomic.Pointer[StoppedError] // set when the running code cannot restore it
	phase    atomic.Pointer[string]       // what its restore is doing, for Status
	done     chan struct{}                // closed when the partition is revoked or reset
	once     sync.Once

	forceFull bool // the next restore must replay everything
}

func (p *Processor) newPartition(b *binding, id int32) *partition {
	return &partition{b: b, id: id, done: make(chan struct{}), st: p.newState(b, id)}
}

// newState returns an empty aggregate state for partition id of b.
func (p *Processor) newState(b *binding, id int32) *aggState {
	st := newAggState(b.kind, id, p.cfg.Snapshots, p.writer, p.cfg.CacheSize, p.log, &p.stats, b.eventsTopicID)
	st.obs = p.cfg.Observer
	return st
}

func (pt *partition) isRestored() bool { return pt.restored.Load() }

// setPhase records what the partition's restore is doing now.
func (pt *partition) setPhase(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	pt.phase.Store(&s)
}

func (pt *partition) close() {
	pt.once.Do(func() {
		pt.st.closed.Store(true)
		close(pt.done)
	})
}

func (pt *partition) isClosed() bool {
	select {
	case <-pt.done:
		return true
	default:
		return false
	}
}
