package processor

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/internal/redistest"
	"github.com/chronicle-es/chronicle/snapshots"
	"github.com/chronicle-es/chronicle/topics"
)

// fillEvents writes n counter events (aggs aggregates, round robin) straight
// to partition 0 of the events topic, as the processor would have, and
// returns copies of the aggregates as they were after the first upTo events.
func fillEvents(b *testing.B, c *kfake.Cluster, kind *aggregates.Definition[counterState], topic string, aggs, n, upTo int) map[string]*aggregates.Root[counterState] {
	b.Helper()
	cl := newProducer(b, c, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.MaxBufferedRecords(100_000))
	roots := map[string]*aggregates.Root[counterState]{}
	var frozen map[string]*aggregates.Root[counterState]
	ctx := context.Background()
	now := time.Now()
	var firstErr error
	for i := range n {
		id := fmt.Sprintf("c-%d", i%aggs)
		r := roots[id]
		if r == nil {
			r = kind.New(id)
			roots[id] = r
		}
		var payload any = counterCreated{}
		if r.Version() >= 0 {
			payload = counterAdded{N: 1}
		}
		name, _ := kind.EventType(payload)
		ev := aggregates.Event{ID: ulidAt(now), Type: name, Source: "/chronicle/counter", Subject: id, Time: now,
			AggregateType: "counter", Version: r.Version() + 1, SchemaVersion: 1, Data: payload}
		v, err := ev.Encode()
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Apply(&ev); err != nil {
			b.Fatal(err)
		}
		cl.Produce(ctx, &kgo.Record{Topic: topic, Partition: 0, Key: topics.EventKey(id, ev.Version), Value: v}, func(_ *kgo.Record, err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
		if i == upTo-1 {
			// Freeze the states as of upTo events: copy through snapshots.
			frozen = map[string]*aggregates.Root[counterState]{}
			for id, r := range roots {
				data, _ := r.MarshalSnapshot()
				f := kind.New(id)
				if err := f.UnmarshalSnapshot(data); err != nil {
					b.Fatal(err)
				}
				frozen[id] = f
			}
		}
	}
	if err := cl.Flush(ctx); err != nil || firstErr != nil {
		b.Fatal(err, firstErr)
	}
	return frozen
}

func ulidAt(t time.Time) (id [16]byte) {
	u, _ := aggregates.NewID(t)
	return u
}

// BenchmarkRestore compares restoring a partition holding 1M events from a
// checkpoint 10k events back (snapshots in a real redis-server) with a full
// replay of it.
func BenchmarkRestore(b *testing.B) {
	const events, back, aggs = 1_000_000, 10_000, 10_000
	c := startCluster(b)
	kind := counterKind()
	names := topics.For("counters")
	createTopics(b, c, "counters", 1)
	frozen := fillEvents(b, c, kind, names.Events, aggs, events, events-back)

	rs := redistest.Start(b)
	store, err := snapshots.Open(rs.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	restoreOnce := func(b *testing.B, withStore bool, i int) time.Duration {
		cfg := testConfig(b, c, fmt.Sprintf("restore-%v-%d", withStore, i), Binding{Kind: kind, Prefix: "counters"})
		cfg.Group = fmt.Sprintf("restore-%v-%d", withStore, i)
		cfg.CacheSize = aggs
		cfg.CheckpointEvents, cfg.CheckpointInterval = 1<<30, time.Hour
		if withStore {
			cfg.Snapshots = store
			// The checkpoint 10k events back, with every aggregate's snapshot.
			var snaps []snapshots.Snapshot
			for id, r := range frozen {
				data, _ := r.MarshalSnapshot()
				snaps = append(snaps, snapshots.Snapshot{AggregateID: id, Version: r.Version(), Offset: -1, Stamp: kind.StateStamp(), Data: data})
			}
			ctx := context.Background()
			if err := store.DropPartition(ctx, "counter", 0); err != nil {
				b.Fatal(err)
			}
			for j := 0; j < len(snaps); j += 1000 {
				var cp *snapshots.Checkpoint
				if j+1000 >= len(snaps) {
					cp = &snapshots.Checkpoint{Offset: events - back, Stamp: kind.StateStamp(), Time: time.Now()}
				}
				if err := store.Save(ctx, "counter", 0, cp, snaps[j:min(j+1000, len(snaps))]); err != nil {
					b.Fatal(err)
				}
			}
		}
		start := time.Now()
		r := startProcessor(b, cfg)
		deadline := time.Now().Add(10 * time.Minute)
		for r.p.Stats().Restores == 0 {
			if time.Now().After(deadline) {
				b.Fatal("restore did not finish in 10 minutes")
			}
			time.Sleep(time.Millisecond)
		}
		took := time.Since(start)
		st := r.p.Stats()
		if withStore && (st.CheckpointRestores != 1 || st.EventsReplayed != back) {
			b.Fatalf("checkpoint restore replayed %d events: %+v", st.EventsReplayed, st)
		}
		if !withStore && st.EventsReplayed != events {
			b.Fatalf("full replay replayed %d events: %+v", st.EventsReplayed, st)
		}
		r.stop(b)
		return took
	}
	var full, fromCP time.Duration
	for i := 0; i < b.N; i++ {
		full += restoreOnce(b, false, i)
		fromCP += restoreOnce(b, true, i)
	}
	b.ReportMetric(full.Seconds()/float64(b.N), "full-replay-s")
	b.ReportMetric(fromCP.Seconds()/float64(b.N), "checkpoint-s")
	b.ReportMetric(full.Seconds()/fromCP.Seconds(), "speedup-x")
}

// BenchmarkCachedOrderHeap measures the heap held per cached Order with 3
// lines, including the cache's own bookkeeping.
func BenchmarkCachedOrderHeap(b *testing.B) {
	const n = 100_000
	def := order.Definition()
	now := time.Now()
	for i := 0; i < b.N; i++ {
		runtime.GC()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c := newCache()
		for j := range n {
			id := fmt.Sprintf("order-%07d", j)
			r := def.New(id)
			for _, p := range []any{order.CreateOrder{UserID: "u-1"}, order.AddLine{ProductID: 1, Quantity: 1, UnitPrice: 100},
				order.AddLine{ProductID: 2, Quantity: 2, UnitPrice: 250}, order.AddLine{ProductID: 3, Quantity: 3, UnitPrice: 999}} {
				cmd, err := def.NewCommand(id, p, aggregates.Metadata{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := r.Execute(&cmd, now); err != nil {
					b.Fatal(err)
				}
			}
			r.ClearChanges()
			c.put(r, int64(j))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "heap-bytes/order")
		runtime.KeepAlive(c)
	}
}
