package processor

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
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

	out arena              // what the worker produces: records and their keys and values
	cmd aggregates.Command // the command being handled (see handle)
}

// arena hands out the records a partition's worker produces, and the bytes
// of their keys and values, from blocks shared by many records: a block is
// never reused, only dropped, and the garbage collector frees it once
// Kafka is done with every record in it. It spares two allocations per
// record. Only the partition's worker uses it.
type arena struct {
	recs []kgo.Record
	buf  []byte
}

// record returns a zero record.
func (a *arena) record() *kgo.Record {
	if len(a.recs) == cap(a.recs) {
		a.recs = make([]kgo.Record, 0, 256)
	}
	a.recs = a.recs[:len(a.recs)+1]
	return &a.recs[len(a.recs)-1]
}

// start returns the buffer to append one key or value to; done takes the
// appended buffer back and returns what was appended.
func (a *arena) start() []byte {
	if cap(a.buf)-len(a.buf) < 1024 {
		a.buf = make([]byte, 0, 64<<10)
	}
	return a.buf
}

func (a *arena) done(b []byte) []byte {
	v := b[len(a.buf):len(b):len(b)]
	a.buf = b
	return v
}

// appendString returns the bytes of s from the arena.
func (a *arena) appendString(s string) []byte { return a.done(append(a.start(), s...)) }

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
