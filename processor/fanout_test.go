package processor

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/topics"
)

// TestFanOutDecidesLikeOneByOne works off a backlog in one partition, so
// that polls hand over hundreds of its commands at once and several
// workers decide them, with malformed and mis-keyed commands among them:
// every result, event and state must be what deciding the commands one by
// one gives, and the bad ones get their invalid results in their turn.
func TestFanOutDecidesLikeOneByOne(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("fanOut needs GOMAXPROCS >= 2")
	}
	const orders, perOrder = 60, 30
	c := startCluster(t)
	def := order.Definition()
	names := topics.For("fan")
	createTopics(t, c, "fan", 1)

	rng := rand.New(rand.NewPCG(3, 4))
	oracle := map[string]*aggregates.Root[order.State]{}
	want := map[string]aggregates.Result{}
	perAgg := make([][]*kgo.Record, orders)
	for i := range orders {
		id := fmt.Sprintf("o-%d", i)
		root := def.New(id)
		oracle[id] = root
		for _, payload := range orderCommands(rng, perOrder) {
			cmd, err := def.NewCommand(id, payload, aggregates.Metadata{Actor: "test"})
			if err != nil {
				t.Fatal(err)
			}
			events, err := root.Execute(&cmd, time.Now())
			want[cmd.ID.String()] = aggregates.ResultFor(&cmd, "order", root.Version(), events, err)
			v, _ := cmd.Encode()
			perAgg[i] = append(perAgg[i], &kgo.Record{Topic: names.Commands, Key: []byte(id), Value: v})
		}
	}
	var recs []*kgo.Record
	for j := range perOrder {
		for i := range orders {
			recs = append(recs, perAgg[i][j])
		}
		// A malformed command (no result, a DLQ record) and a mis-keyed one
		// (an invalid result) in every round.
		recs = append(recs, &kgo.Record{Topic: names.Commands, Key: []byte("o-0"), Value: []byte(`{"id":`)})
		cmd, err := def.NewCommand("o-1", order.CreateOrder{UserID: "u"}, aggregates.Metadata{})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := cmd.Encode()
		recs = append(recs, &kgo.Record{Topic: names.Commands, Key: []byte("o-2"), Value: v})
		want[cmd.ID.String()] = aggregates.Result{Status: aggregates.StatusInvalid, Code: aggregates.CodeKeyMismatch, Version: -1}
	}
	produceAll(t, newProducer(t, c, kgo.RecordPartitioner(topics.Partitioner())), recs)

	cfg := testConfig(t, c, "fan-1", Binding{Kind: def, Prefix: "fan"})
	cfg.Partitions, cfg.CommitEvery = 1, 1000
	rn := startProcessor(t, cfg)

	results := waitResults(t, c, names.Results, len(want), 120*time.Second)
	if rn.p.stats.fannedOut.Load() == 0 {
		t.Error("no batch was decided by several workers")
	}
	for id, w := range want {
		got, ok := results[id]
		if !ok {
			t.Errorf("command %s: no result", id)
			continue
		}
		if got.Status != w.Status || got.Code != w.Code || got.Version != w.Version {
			t.Errorf("command %s: %s/%s version %d, want %s/%s version %d (%s)", id, got.Status, got.Code, got.Version, w.Status, w.Code, w.Version, got.Reason)
		}
	}
	if n := len(readAll(t, c, names.DLQ)); n != 2*perOrder {
		t.Errorf("%d DLQ records, want %d", n, 2*perOrder)
	}
	events := eventsByAggregate(t, c, def, names.Events, 1)
	for id, w := range oracle {
		got := def.New(id)
		if err := got.Load(events[id]); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if got.Version() != w.Version() || !reflect.DeepEqual(got.State(), w.State()) {
			t.Errorf("%s: events give version %d state %+v, commands imply version %d state %+v", id, got.Version(), got.State(), w.Version(), w.State())
		}
	}
}
