package processor

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/topics"
)

// TestStateWrittenOncePerTransaction works off a backlog of one order's
// commands with fetches so small that a transaction is made of many polls:
// each committed transaction must write the order's state record once,
// after its last event (the state of the highest version so far), however
// many polls it took.
func TestStateWrittenOncePerTransaction(t *testing.T) {
	const adds = 120
	c := startCluster(t)
	def := order.Definition()
	names := topics.For("once")
	createTopics(t, c, "once", 1)

	// One record per produce request, so that a fetch of a few bytes
	// returns a few commands.
	cl := newProducer(t, c, kgo.RecordPartitioner(topics.Partitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range adds + 1 {
		var payload any = order.CreateOrder{UserID: "u-1"}
		if i > 0 {
			payload = order.AddLine{ProductID: int64(1 + i%3), Quantity: 1, UnitPrice: 100}
		}
		rec := command(t, def, names.Commands, "o-1", payload, nil)
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	cfg := testConfig(t, c, "once-1", Binding{Kind: def, Prefix: "once"})
	cfg.Partitions, cfg.CommitEvery, cfg.CommitInterval = 1, 10_000, 2*time.Second
	cfg.SessionOptions = []kgo.Opt{kgo.FetchMaxPartitionBytes(256), kgo.FetchMaxBytes(256)}
	rn := startProcessor(t, cfg)
	results := waitResults(t, c, names.Results, adds+1, 60*time.Second)
	for id, r := range results {
		if r.Status != aggregates.StatusAccepted {
			t.Fatalf("command %s: %s (%s)", id, r.Status, r.Reason)
		}
	}
	rn.stop(t)

	st := rn.p.Stats()
	if st.TxnsCommitted == 0 || rn.p.stats.batches.Load() <= st.TxnsCommitted {
		t.Fatalf("%d polls in %d transactions: the test needs transactions of several polls", rn.p.stats.batches.Load(), st.TxnsCommitted)
	}
	states := readAll(t, c, names.State)
	if int64(len(states)) != st.TxnsCommitted {
		t.Errorf("%d state records in %d committed transactions (%d polls), want one per transaction", len(states), st.TxnsCommitted, rn.p.stats.batches.Load())
	}
	last := int64(-1)
	for _, r := range states {
		var s struct {
			Version int64 `json:"version"`
		}
		if err := json.Unmarshal(r.Value, &s); err != nil {
			t.Fatalf("state record %s: %v", r.Value, err)
		}
		if s.Version <= last {
			t.Errorf("state record of version %d after one of version %d", s.Version, last)
		}
		last = s.Version
	}
	if last != adds { // versions count from 0
		t.Errorf("the last state record has version %d, want %d", last, adds)
	}
}
