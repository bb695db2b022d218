package processor

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/chronicle-es/chronicle/aggregates"
)

// minFanOut is the fewest records of one partition in a batch that are
// decided by several workers (see fanOut); below it the goroutines cost
// more than they save.
const minFanOut = 64

// fanOutChunk is how many records of a fanned-out batch the workers decide
// before that part of the batch is written out (while they go on).
const fanOutChunk = 128

// decided is one command a fan-out worker decided, for emit.
type decided struct {
	ok          bool // the pre-pass found its aggregate; the worker decided it
	worker      int  // the worker that decides it: set by the pre-pass, -1 for none
	span        trace.Span
	traceParent string
	agg         aggregates.Aggregate
	cmd         aggregates.Command
	d           aggregates.Decision
	res         aggregates.Result
	enc         encodedResult
	stamp       time.Time
	began, end  time.Time
}

// fanOut decides the commands of recs on workers goroutines and writes
// what they decided in offset order, chunk by chunk as the workers get
// through it, so that what it produces is what handling them one by one
// would produce.
//
// A poll mostly hands over the records of one partition (a fetch holds up
// to a megabyte of each partition, and a poll takes records from the
// front), so without it a batch is decided on one core. Commands of
// different aggregates are independent; those of one aggregate go to one
// worker (by a hash of the record key) and are decided in order there.
// Deciding (decoding, the aggregate's handler, encoding the events, the
// new state and the result into the worker's own arena) runs in the workers;
// the aggregate lookups in the LRU before, and everything that produces,
// counts, logs or touches the partition's state after, run here. A command
// the workers cannot decide (too large, not owned here, mis-keyed,
// malformed) is handled in its turn by handle, which never touches an
// aggregate for it.
//
// It returns false, having decided nothing, when an owned aggregate of
// recs is not in memory (lookup did not bring it): handle then deals with
// that in order.
func (pt *partition) fanOut(ctx context.Context, p *Processor, sess *kgo.GroupTransactSession, recs []*kgo.Record, workers int) bool {
	if cap(pt.decs) < len(recs) {
		pt.decs = make([]decided, len(recs))
	}
	decs := pt.decs[:len(recs)]
	defer clear(decs) // keep no command, decision or aggregate past the batch
	for i, r := range recs {
		decs[i].worker = -1
		if len(r.Value) > p.cfg.MaxCommandBytes || len(r.Key) == 0 || p.owner.Of(r.Key, pt.b.n) != pt.id {
			continue
		}
		e := pt.st.cache.getKey(r.Key)
		if e == nil {
			return false
		}
		decs[i].ok, decs[i].agg, decs[i].worker = true, e.agg, int(keyHash(r.Key)%uint32(workers))
	}
	p.stats.fannedOut.Add(1)
	for len(pt.workerOut) < workers {
		pt.workerOut = append(pt.workerOut, arena{})
	}
	// The workers go through the batch chunk by chunk, and each chunk is
	// written out as soon as all of them are past it, while they decide
	// the next ones.
	chunks := (len(recs) + fanOutChunk - 1) / fanOutChunk
	done := make([]sync.WaitGroup, chunks)
	for c := range done {
		done[c].Add(workers)
	}
	for w := range workers {
		go func() {
			for c := range chunks {
				lo, hi := c*fanOutChunk, min(len(recs), (c+1)*fanOutChunk)
				pt.decideShare(ctx, p, recs[lo:hi], decs[lo:hi], w, &pt.workerOut[w])
				done[c].Done()
			}
		}()
	}
	for c := range chunks {
		done[c].Wait()
		for i := c * fanOutChunk; i < min(len(recs), (c+1)*fanOutChunk); i++ {
			r, dc := recs[i], &decs[i]
			if !dc.ok {
				pt.handle(ctx, p, sess, r, time.Now())
				continue
			}
			p.stats.commands.Add(1)
			pt.emit(ctx, p, sess, r, &dc.cmd, dc.agg.ID(), &dc.d, &dc.res, &dc.enc, dc.stamp, dc.span, dc.traceParent, dc.began, dc.end)
			if dc.span != nil {
				dc.span.End()
			}
		}
	}
	return true
}

// decideShare decides the commands of decs that fall to worker w, with
// out for the encoded events, states and results. A command that does not
// decode, or whose key is not its aggregate id, is left to handle (ok
// false).
func (pt *partition) decideShare(ctx context.Context, p *Processor, recs []*kgo.Record, decs []decided, w int, out *arena) {
	kind := pt.b.kind.Name()
	now := time.Now()
	for i, r := range recs {
		dc := &decs[i]
		if dc.worker != w { // another worker's: not even read here
			continue
		}
		var err error
		if dc.cmd, err = aggregates.DecodeCommand(r.Value); err != nil || string(r.Key) != dc.cmd.AggregateID {
			dc.ok = false
			continue
		}
		// The span (with a Tracer) starts here and ends once the command's
		// records are written; its context goes into the events.
		dc.span, dc.traceParent = p.traceCommand(ctx, r, &dc.cmd, kind)
		dc.began, dc.stamp = now, now
		if !p.cfg.realClock {
			dc.stamp = p.cfg.Now()
		}
		d, err := execute(dc.agg, &dc.cmd, dc.stamp, out)
		dc.agg.ClearChanges()
		dc.d, dc.res = d, aggregates.ResultFor(&dc.cmd, kind, dc.agg.Version(), d.Events, err)
		dc.res.Time = dc.stamp
		if v, err := dc.res.AppendJSON(out.start()); err != nil {
			dc.enc.err = err
		} else {
			dc.enc.v = out.done(v)
		}
		now = time.Now()
		dc.end = now
	}
}

// encodedResult is a result a worker encoded: its bytes, or why it could
// not.
type encodedResult struct {
	v   []byte
	err error
}

// keyHash is FNV-1a of a record key: it spreads aggregates over workers.
func keyHash(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}
