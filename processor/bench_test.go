package processor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/internal/redistest"
	"github.com/chronicle-es/chronicle/snapshots"
	"github.com/chronicle-es/chronicle/topics"
)

// benchCommands is the size of one benchmark workload.
const benchCommands = 20000

// committedTotal sums the stable end offsets of topic's partitions.
func committedTotal(ctx context.Context, adm *kadm.Client, topic string) int64 {
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return -1
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// waitTotal waits until topic holds want committed records (control
// markers included, so callers pass a lower bound they then exceed).
func waitCount(b *testing.B, adm *kadm.Client, topic string, count func() int64, want int64) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for count() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%s: only %d of %d after 5 minutes", topic, count(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// BenchmarkThroughput compares, on the same kfake broker and workload, the
// full processor (decode, aggregate, events + state + results, exactly
// once) with a bare franz-go transactional consume→produce loop that only
// copies each record. cmds/s is the figure to compare.
func BenchmarkThroughput(b *testing.B) {
	b.Run("bare-transact-loop", func(b *testing.B) { benchBare(b, 1) })
	// The same loop writing three records per command, as Chronicle does
	// (event, state, result): how much of the gap is the broker's work.
	b.Run("bare-transact-loop-3-records", func(b *testing.B) { benchBare(b, 3) })
	b.Run("chronicle", func(b *testing.B) { benchChronicle(b, false) })
	b.Run("chronicle-with-redis-checkpoints", func(b *testing.B) { benchChronicle(b, true) })
}

// benchBare runs the bare loop over the workload, writing out records per
// input record.
func benchBare(b *testing.B, out int) {
	{
		var elapsed time.Duration
		for i := 0; i < b.N; i++ {
			c := startCluster(b)
			names := topics.For("counters")
			createTopics(b, c, "counters", 6)
			kind := counterKind()
			s := counterStream(b, kind, names.Commands, 1000, benchCommands/1000)
			produceAll(b, newProducer(b, c), s.recs)
			start := time.Now()
			bareLoop(b, c, names.Commands, []string{names.Events, names.State, names.Results}[:out], int64(len(s.recs)))
			elapsed += time.Since(start)
			c.Close()
		}
		b.ReportMetric(float64(benchCommands*b.N)/elapsed.Seconds(), "cmds/s")
	}
}

// benchChronicle runs the full processor over the workload, with snapshots
// and a checkpoint every 1000 events in a real redis-server when withStore.
func benchChronicle(b *testing.B, withStore bool) {
	var store *snapshots.Redis
	if withStore {
		rs := redistest.Start(b)
		var err error
		if store, err = snapshots.Open(rs.URL()); err != nil {
			b.Fatal(err)
		}
		defer store.Close()
	}
	{
		var elapsed time.Duration
		for i := 0; i < b.N; i++ {
			c := startCluster(b)
			names := topics.For("counters")
			createTopics(b, c, "counters", 6)
			kind := counterKind()
			s := counterStream(b, kind, names.Commands, 1000, benchCommands/1000)
			produceAll(b, newProducer(b, c), s.recs)
			adm := newAdmin(b, c)
			cfg := testConfig(b, c, fmt.Sprintf("bench-%d", i), Binding{Kind: kind, Prefix: "counters"})
			cfg.CommitEvery, cfg.CommitInterval = 1000, 100*time.Millisecond
			if withStore {
				cfg.Snapshots, cfg.CheckpointEvents = store, 1000
			}
			start := time.Now()
			r := startProcessor(b, cfg)
			waitCount(b, adm, names.Results, func() int64 { return r.p.Stats().Restores }, 6)
			restored := time.Since(start)
			waitCount(b, adm, names.Results, func() int64 { return r.p.Stats().Commands }, int64(len(s.recs)))
			processed := time.Since(start)
			ctx := context.Background()
			waitCount(b, adm, names.Results, func() int64 { return committedTotal(ctx, adm, names.Results) }, int64(len(s.recs)))
			elapsed += time.Since(start)
			b.Logf("restored after %v, processed after %v, committed after %v; %+v", restored, processed, time.Since(start), r.p.Stats())
			r.stop(b)
			c.Close()
		}
		b.ReportMetric(float64(benchCommands*b.N)/elapsed.Seconds(), "cmds/s")
	}
}

// bareLoop is the baseline: a GroupTransactSession that copies every input
// record to each output topic, committing every 1000 records.
func bareLoop(b *testing.B, c *kfake.Cluster, in string, outs []string, n int64) {
	b.Helper()
	sess, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumerGroup("bare"), kgo.ConsumeTopics(in), kgo.TransactionalID("bare"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.SessionTimeout(3*time.Second), kgo.HeartbeatInterval(500*time.Millisecond),
		kgo.TransactionTimeout(10*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	ctx := context.Background()
	var done int64
	for done < n {
		pollCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		fs := sess.PollRecords(pollCtx, 1000)
		cancel()
		if fs.Empty() {
			continue
		}
		if err := sess.Begin(); err != nil {
			b.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			for _, out := range outs {
				sess.Produce(ctx, &kgo.Record{Topic: out, Key: r.Key, Value: r.Value}, nil)
			}
			done++
		})
		if committed, err := sess.End(ctx, kgo.TryCommit); err != nil || !committed {
			b.Fatalf("bare loop commit: %v %v", committed, err)
		}
	}
}
