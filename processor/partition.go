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

	seen map[string]struct{} // ownedIDs' set, reused batch after batch
	ids  []string            // ownedIDs' result, reused batch after batch

	out arena              // what the worker produces: records and their keys and values
	cmd aggregates.Command // the command being handled (see handle)

	// For fanOut: what its workers decided, and their arenas.
	decs      []decided
	workerOut []arena
}

// arena hands out the records a partition's worker produces, and the bytes
// of their keys and values, from blocks shared by many records. It spares
// two allocations per record. Only the partition's worker uses it, and the
// main loop between transactions.
//
// The Kafka client holds a produced record until the transaction ends, and
// the state bookkeeping until it is settled, so a block is handed out again
// only after release, which the main loop calls once a transaction
// committed: End flushed every record, and committed consumed their
// offsets. After an abort or a failed End the client may still hold them:
// drop forgets the blocks instead, and the garbage collector frees them
// once nothing refers to them.
type arena struct {
	recs []kgo.Record // the block records come from
	buf  []byte       // the block bytes come from
	// The blocks filled since the last release or drop, and those
	// released, ready to be handed out again.
	usedRecs, freeRecs [][]kgo.Record
	usedBufs, freeBufs [][]byte
}

const (
	arenaRecords = 256      // records per block
	arenaBytes   = 64 << 10 // bytes per block
	// arenaKeep is the most blocks of each kind release keeps, so that one
	// large transaction does not pin its memory for good.
	arenaKeep = 64
)

// record returns a zero record.
func (a *arena) record() *kgo.Record {
	if len(a.recs) == cap(a.recs) {
		if a.recs != nil {
			a.usedRecs = append(a.usedRecs, a.recs)
		}
		if n := len(a.freeRecs); n > 0 {
			a.recs, a.freeRecs = a.freeRecs[n-1], a.freeRecs[:n-1]
		} else {
			a.recs = make([]kgo.Record, 0, arenaRecords)
		}
	}
	a.recs = a.recs[:len(a.recs)+1]
	return &a.recs[len(a.recs)-1]
}

// start returns the buffer to append one key or value to; done takes the
// appended buffer back and returns what was appended.
func (a *arena) start() []byte {
	if cap(a.buf)-len(a.buf) < 1024 {
		if a.buf != nil {
			a.usedBufs = append(a.usedBufs, a.buf)
		}
		if n := len(a.freeBufs); n > 0 {
			a.buf, a.freeBufs = a.freeBufs[n-1], a.freeBufs[:n-1]
		} else {
			a.buf = make([]byte, 0, arenaBytes)
		}
	}
	return a.buf
}

// done takes back the buffer start returned, appended to (and possibly
// grown by append), and returns what was appended.
func (a *arena) done(b []byte) []byte {
	v := b[len(a.buf):len(b):len(b)]
	a.buf = b
	return v
}

// release makes every block handed out so far available again. Call it only
// when nothing refers to any record or byte from the arena any more: after
// a committed transaction, once its bookkeeping is done.
func (a *arena) release() {
	for _, r := range a.usedRecs {
		clear(r[:cap(r)]) // no record keeps a value, header or context alive
		if len(a.freeRecs) < arenaKeep {
			a.freeRecs = append(a.freeRecs, r[:0])
		}
	}
	for _, b := range a.usedBufs {
		if len(a.freeBufs) < arenaKeep && cap(b) <= 4*arenaBytes {
			a.freeBufs = append(a.freeBufs, b[:0])
		}
	}
	clear(a.usedRecs)
	clear(a.usedBufs)
	a.usedRecs, a.usedBufs = a.usedRecs[:0], a.usedBufs[:0]
	clear(a.recs[:cap(a.recs)])
	a.recs, a.buf = a.recs[:0], a.buf[:0]
}

// releaseArenas releases the arena of the partition's worker and those of
// its fan-out workers (see arena.release).
func (pt *partition) releaseArenas() {
	pt.out.release()
	for i := range pt.workerOut {
		pt.workerOut[i].release()
	}
}

// dropArenas drops the arena of the partition's worker and those of its
// fan-out workers (see arena.drop).
func (pt *partition) dropArenas() {
	pt.out.drop()
	for i := range pt.workerOut {
		pt.workerOut[i].drop()
	}
}

// drop forgets every block handed out so far, keeping the released ones:
// after an aborted or failed transaction, whose records the client may
// still hold.
func (a *arena) drop() {
	clear(a.usedRecs)
	clear(a.usedBufs)
	a.usedRecs, a.usedBufs = a.usedRecs[:0], a.usedBufs[:0]
	a.recs, a.buf = nil, nil
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
	if p.materializeStep > 0 {
		st.materializeStep = p.materializeStep
	}
	return st
}

func (pt *partition) isRestored() bool { return pt.restored.Load() }

// fallBack makes the partition's next restore a full replay, because a
// snapshot found after its restore cannot be trusted, and counts that
// fallback once.
func (pt *partition) fallBack(p *Processor) {
	if !pt.forceFull {
		p.stats.fallbacks.Add(1)
	}
	pt.forceFull = true
}

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
