package processor

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/snapshots"
)

// batchLog hands out its records in batches of 1000, as fetches do.
type batchLog struct{ recs []rawEvent }

func (l *batchLog) name() string  { return "bench-events/0" }
func (l *batchLog) topic() string { return "bench-events" }
func (l *batchLog) read(_ context.Context, from, end int64, _ bool, fn func([]rawEvent) error) error {
	for off := from; off < end; off += 1000 {
		if err := fn(l.recs[off:min(off+1000, end)]); err != nil {
			return err
		}
	}
	return nil
}

// orderHistories returns n order events over aggs orders, interleaved (one
// event of every order, then the next…), and the orders as of event upTo.
func orderHistories(b *testing.B, n, aggs, upTo int) (*batchLog, []snapshots.Snapshot) {
	b.Helper()
	def := order.Definition()
	now := time.Unix(1_700_000_000, 0)
	roots := make([]*aggregates.Root[order.State], aggs)
	log := &batchLog{}
	var snaps []snapshots.Snapshot
	for i := range n {
		k := i % aggs
		id := fmt.Sprintf("order-%07d", k)
		if roots[k] == nil {
			roots[k] = def.New(id)
		}
		v := roots[k].Version() + 1
		var p any
		switch {
		case v == 0:
			p = order.OrderCreated{UserID: "u-" + id}
		case v <= 3:
			p = order.LineAdded{ProductID: 100 + v, Quantity: v, UnitPrice: 1999}
		case v%2 == 0:
			p = order.LineRemoved{ProductID: 101 + v%3}
		default:
			p = order.LineAdded{ProductID: 101 + (v-1)%3, Quantity: 2, UnitPrice: 1999}
		}
		name, _ := def.EventType(p)
		cause := ulid.MustNew(ulid.Timestamp(now), nil).String()
		e := aggregates.Event{ID: ulid.MustNew(ulid.Timestamp(now), nil), Type: name, Source: "/chronicle/order", Subject: id, Time: now,
			AggregateType: "order", Version: v, SchemaVersion: 1, CausationID: cause, CorrelationID: cause, Data: p}
		doc, err := e.Encode()
		if err != nil {
			b.Fatal(err)
		}
		if err := roots[k].Apply(&e); err != nil {
			b.Fatal(err)
		}
		log.recs = append(log.recs, rawEvent{offset: int64(i), value: doc})
		if i == upTo-1 {
			for _, r := range roots {
				if r == nil {
					continue
				}
				data, err := r.MarshalSnapshot()
				if err != nil {
					b.Fatal(err)
				}
				snaps = append(snaps, snapshots.Snapshot{AggregateID: r.ID(), Version: r.Version(), Offset: int64(i), Stamp: def.StateStamp(), Data: data})
			}
		}
	}
	return log, snaps
}

// BenchmarkStateRestore measures aggState.restore alone (no Kafka): a full
// replay of 200k order events, and a restore from a checkpoint 10k events
// back with the 10k orders' snapshots in a memory store.
func BenchmarkStateRestore(b *testing.B) {
	const n, aggs, back = 200_000, 10_000, 10_000
	log, snaps := orderHistories(b, n, aggs, n-back)
	kind := order.Definition()
	ctx := context.Background()
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			st := newAggState(kind, 0, nil, nil, aggs, slog.New(slog.DiscardHandler), &counters{}, "t")
			if _, err := st.restore(ctx, log, n, false); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("checkpoint", func(b *testing.B) {
		b.ReportAllocs()
		store := snapshots.NewMemory()
		for b.Loop() {
			b.StopTimer()
			if err := store.DropPartition(ctx, "order", 0); err != nil {
				b.Fatal(err)
			}
			cp := &snapshots.Checkpoint{Offset: n - back, Stamp: kind.StateStamp() + " topic t", Time: time.Now()}
			if err := store.Save(ctx, "order", 0, cp, snaps); err != nil {
				b.Fatal(err)
			}
			w := newWriter(store, slog.New(slog.DiscardHandler), &counters{})
			st := newAggState(kind, 0, store, w, aggs, slog.New(slog.DiscardHandler), &counters{}, "t")
			b.StartTimer()
			rep, err := st.restore(ctx, log, n, false)
			if err != nil {
				b.Fatal(err)
			}
			if rep.from != n-back || rep.replayed != back {
				b.Fatalf("restored %+v", rep)
			}
		}
	})
}
