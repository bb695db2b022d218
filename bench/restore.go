package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/processor"
	"github.com/chronicle-es/chronicle/snapshots"
	"github.com/chronicle-es/chronicle/topics"
)

// eventsPerOrder is the length of one order's history in the restore phase.
const eventsPerOrder = 100

// histories writes the events of orders orders interleaved (the first event
// of every order, then the second…), as a partition of the events topic
// holds them: created, three lines, then lines removed and added again.
type histories struct {
	def     *aggregates.Definition[order.State]
	orders  int
	entropy *ulid.MonotonicEntropy
	now     time.Time
}

func newHistories(orders int) *histories {
	return &histories{def: order.Definition(), orders: orders, now: time.Now(),
		entropy: ulid.Monotonic(rand.NewChaCha8([32]byte{1}), 0)}
}

// payload is version v of an order's history.
func payload(user string, v int64) any {
	switch {
	case v == 0:
		return order.OrderCreated{UserID: user}
	case v <= 3:
		return order.LineAdded{ProductID: 100 + v - 1, Quantity: v, UnitPrice: 1999}
	}
	k := v - 4
	p := 100 + (k/2)%3
	if k%2 == 0 {
		return order.LineRemoved{ProductID: p}
	}
	return order.LineAdded{ProductID: p, Quantity: 2, UnitPrice: 1999}
}

// event returns the i-th event record of the interleaved histories, for
// partition 0 of topic.
func (h *histories) event(topic string, i int) (*kgo.Record, error) {
	id := orderID(i % h.orders)
	v := int64(i / h.orders)
	p := payload("u-"+id, v)
	name, _ := h.def.EventType(p)
	eid, err := ulid.New(ulid.Timestamp(h.now), h.entropy)
	if err != nil {
		return nil, err
	}
	cause, err := ulid.New(ulid.Timestamp(h.now), h.entropy)
	if err != nil {
		return nil, err
	}
	e := aggregates.Event{ID: eid, Type: name, Source: "/chronicle/order", Subject: id, Time: h.now, AggregateType: "order",
		Version: v, SchemaVersion: 1, CausationID: cause.String(), CorrelationID: cause.String(), Data: p}
	doc, err := e.Encode()
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: topic, Partition: 0, Key: topics.EventKey(id, v), Value: doc}, nil
}

// RestoreStore is a snapshot store the restore phase can use: the
// processor's, and the checkpoint it holds can be read.
type RestoreStore interface {
	processor.SnapshotStore
	Checkpoint(ctx context.Context, aggType string, partition int32) (snapshots.Checkpoint, bool, error)
}

// restore runs the restore phase.
func (r *run) restore(ctx context.Context) (*Restore, error) {
	cfg := r.cfg
	prefix := r.prefix + "-restore"
	names, err := r.ensure(ctx, prefix, 1)
	if err != nil {
		return nil, err
	}
	orders := max(1, cfg.ReplayEvents/eventsPerOrder)
	h := newHistories(orders)
	upTo := cfg.ReplayEvents - cfg.CheckpointBack
	write := func(from, to int) error {
		return r.produceAll(ctx, "writing events", func(yield func(*kgo.Record) bool) error {
			for i := from; i < to; i++ {
				rec, err := h.event(names.Events, i)
				if err != nil {
					return err
				}
				if !yield(rec) {
					return nil
				}
			}
			return nil
		}, int64(to-from), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	if err := write(0, upTo); err != nil {
		return nil, err
	}
	store := cfg.Snapshots
	if store == nil {
		mem := snapshots.NewMemory()
		defer mem.Close()
		store = mem
	}
	withStore := func(c *processor.Config) {
		c.Snapshots = store
		c.CacheSize = orders + 1
		c.CheckpointEvents, c.CheckpointInterval = 1<<30, time.Hour
	}
	// The first processor restores the events up to the checkpoint and
	// checkpoints them: snapshots of every order and the offset.
	if _, err := r.restoreOnce(ctx, prefix, "checkpointing", withStore, nil); err != nil {
		return nil, err
	}
	cp, ok, err := store.Checkpoint(ctx, "order", 0)
	if err != nil || !ok || cp.Offset != int64(upTo) {
		return nil, fmt.Errorf("the processor left no checkpoint at offset %d (found %v at %d): %w", upTo, ok, cp.Offset, err)
	}
	if err := write(upTo, cfg.ReplayEvents); err != nil {
		return nil, err
	}
	full, err := r.restoreOnce(ctx, prefix, "full replay", nil, nil)
	if err != nil {
		return nil, err
	}
	if full.mode != "full" || full.events != int64(cfg.ReplayEvents) {
		return nil, fmt.Errorf("the full replay was a %s restore of %d events, not of %d", full.mode, full.events, cfg.ReplayEvents)
	}
	// The checkpoint restore leaves the orders of its tail to load on
	// first use. Stopping the processor checkpoints, and that checkpoint
	// loads them all first: the time from the stop until they are loaded
	// is the cost the restore put off.
	var deferred int64
	var deferredTook time.Duration
	fromCP, err := r.restoreOnce(ctx, prefix, "checkpoint restore", withStore, func(rn *running) error {
		began := time.Now()
		rn.cancel()
		for {
			st := rn.p.Stats()
			if st.DeferredLoaded >= st.Deferred {
				deferred, deferredTook = st.Deferred, time.Since(began)
				return nil
			}
			select {
			case err := <-rn.done:
				rn.done <- err // for stop
				if st := rn.p.Stats(); st.DeferredLoaded >= st.Deferred {
					deferred, deferredTook = st.Deferred, time.Since(began)
					return nil
				}
				return fmt.Errorf("the processor stopped (%v) with %d of %d deferred aggregates loaded: its shutdown checkpoint did not load them", err, st.DeferredLoaded, st.Deferred)
			case <-time.After(100 * time.Microsecond):
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if fromCP.mode != "checkpoint" || fromCP.events != int64(cfg.CheckpointBack) {
		return nil, fmt.Errorf("the checkpoint restore was a %s restore of %d events, not of %d", fromCP.mode, fromCP.events, cfg.CheckpointBack)
	}
	return &Restore{Events: cfg.ReplayEvents, Aggregates: orders, Back: cfg.CheckpointBack,
		FullSeconds: full.took.Seconds(), FullEventsPerSecond: float64(full.events) / full.took.Seconds(),
		CheckpointSeconds: fromCP.took.Seconds(), CheckpointEvents: fromCP.events, Speedup: full.took.Seconds() / fromCP.took.Seconds(),
		Deferred: deferred, DeferredSeconds: deferredTook.Seconds()}, nil
}

// restoreOnce starts a processor on the one-partition topics of prefix,
// waits for its restore, runs after (unless nil) and stops it.
func (r *run) restoreOnce(ctx context.Context, prefix, phase string, mod func(*processor.Config), after func(*running) error) (restored, error) {
	r.cfg.Progress(Progress{Phase: phase})
	rn, err := r.startProcessor(ctx, prefix, 1, mod)
	if err != nil {
		return restored{}, err
	}
	var got restored
	select {
	case got = <-rn.obs.restored:
	case err := <-rn.done:
		return restored{}, fmt.Errorf("%s: the processor stopped before restoring: %v", phase, err)
	case <-ctx.Done():
		_ = rn.stop()
		return restored{}, ctx.Err()
	}
	if after != nil {
		if err := after(rn); err != nil {
			_ = rn.stop()
			return got, fmt.Errorf("%s: %w", phase, err)
		}
	}
	if err := rn.stop(); err != nil {
		return got, fmt.Errorf("%s: stopping the processor: %w", phase, err)
	}
	r.cfg.Progress(Progress{Phase: phase, Done: 1, Total: 1})
	return got, nil
}
