package metrics_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/internal/redistest"
	"github.com/chronicle-es/chronicle/metrics"
	"github.com/chronicle-es/chronicle/processor"
	"github.com/chronicle-es/chronicle/snapshots"
)

// value sums the samples of metric name (a counter or gauge) whose labels
// include labels.
func value(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue samples
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// awaitMetric waits until metric name with labels reaches at least want.
func awaitMetric(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string, want float64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s%v >= %v", name, labels, want), func() bool { return value(t, g, name, labels) >= want })
}

// The snapshot-store counters move with a real redis-server that is down,
// comes back, and is flushed: claims are retried and fail while it is down
// (the restore goes on from Kafka alone), saves fail and are retried, and
// a flush loses the partitions' leases with reason "flushed".
func TestSnapshotStoreErrorsRetriesAndLostLeasesAreCounted(t *testing.T) {
	rs := redistest.Start(t)
	if rs.Miniredis() {
		t.Skip("needs a real redis-server to stop and restart (apt-get install redis-server)")
	}
	store, err := snapshots.Open(rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	c := kafkatest.Start(t)
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := processor.New(processor.Config{
		Brokers: c.ListenAddrs(), Group: "store-metrics", TransactionalID: "store-metrics-1", Observer: m,
		Aggregates: []processor.Binding{{Kind: order.Definition(), Prefix: "orders"}}, Partitions: 2,
		Snapshots: store, CheckpointInterval: 50 * time.Millisecond, CheckpointEvents: 1,
		CommitInterval: 20 * time.Millisecond, SessionTimeout: 3 * time.Second, RebalanceTimeout: 3 * time.Second,
		TransactionTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Watch(p)

	rs.Stop() // down before the first restore
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })

	// Each restore claims its partition, retries twice, gives up and
	// replays from Kafka.
	awaitMetric(t, reg, "chronicle_snapshot_store_retries_total", map[string]string{"operation": "claim"}, 2*2)
	awaitMetric(t, reg, "chronicle_snapshot_store_errors_total", map[string]string{"operation": "claim"}, 2)
	waitFor(t, "ready without Redis", func() bool { r, _ := p.Readiness(); return r })

	prod, err := client.NewProducer(client.ProducerConfig{Kafka: client.Kafka{Brokers: c.ListenAddrs()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	send := func(n int, salt string) {
		t.Helper()
		for i := range n {
			cmd, err := order.Definition().NewCommand(fmt.Sprintf("o-%s-%d", salt, i), order.CreateOrder{UserID: "u-1"}, aggregates.Metadata{})
			if err != nil {
				t.Fatal(err)
			}
			sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
			res, err := prod.Send(sctx, "orders", cmd)
			scancel()
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != aggregates.StatusAccepted {
				t.Fatalf("result %+v, want accepted", res)
			}
		}
	}
	// Commands flow; the checkpoints they make due cannot be saved.
	send(10, "down")
	awaitMetric(t, reg, "chronicle_snapshot_store_errors_total", map[string]string{"operation": "save"}, 1)
	awaitMetric(t, reg, "chronicle_snapshot_store_retries_total", map[string]string{"operation": "save"}, 1)

	rs.Restart() // back, empty: the waiting saves claim the partitions and go through
	waitFor(t, "a checkpoint saved once Redis is back", func() bool { return p.Stats().Checkpoints > 0 })
	if n := value(t, reg, "chronicle_snapshot_store_lease_lost_total", nil); n != 0 {
		t.Errorf("%v leases lost before anything lost them", n)
	}

	rs.FlushAll()
	send(10, "flushed")
	awaitMetric(t, reg, "chronicle_snapshot_store_lease_lost_total", map[string]string{"aggregate_type": "order", "reason": processor.LeaseLostFlushed}, 1)
	for _, reason := range []string{processor.LeaseLostClaimed, processor.LeaseLostRolledBack, processor.LeaseLostOther} {
		if n := value(t, reg, "chronicle_snapshot_store_lease_lost_total", map[string]string{"reason": reason}); n != 0 {
			t.Errorf("%v leases lost with reason %q; the only loss was a flush", n, reason)
		}
	}
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := metrics.New(reg); err != nil {
		t.Fatal(err)
	}
	if v := value(t, reg, "chronicle_build_info", map[string]string{"goversion": runtime.Version()}); v != 1 {
		t.Errorf("chronicle_build_info{goversion=%q} = %v, want 1", runtime.Version(), v)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "chronicle_build_info" {
			continue
		}
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			if lp.GetValue() == "" {
				t.Errorf("chronicle_build_info has an empty %s label", lp.GetName())
			}
		}
		return
	}
	t.Error("no chronicle_build_info")
}
