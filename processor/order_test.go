package processor

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/topics"
)

// orderCommands returns n random order commands for one order, valid and
// invalid mixed, starting with CreateOrder.
func orderCommands(rng *rand.Rand, n int) []any {
	out := []any{order.CreateOrder{UserID: "u-1"}}
	statuses := []order.Status{order.StatusConfirmed, order.StatusPaid, order.StatusShipped, order.StatusCancelled, "lost"}
	for len(out) < n {
		switch k := rng.IntN(20); {
		case k < 13:
			out = append(out, order.AddLine{ProductID: rng.Int64N(8) + 1, Quantity: rng.Int64N(4), UnitPrice: 100 * (rng.Int64N(3) + 1)})
		case k < 16:
			out = append(out, order.RemoveLine{ProductID: rng.Int64N(8) + 1})
		default:
			out = append(out, order.ChangeStatus{Status: statuses[rng.IntN(len(statuses))]})
		}
	}
	return out
}

func TestOrdersEndToEnd(t *testing.T) {
	const orders, perOrder, partitions = 500, 40, 6
	c := startCluster(t)
	def := order.Definition()
	names := topics.For("orders")
	createTopics(t, c, "orders", partitions)
	startProcessor(t, testConfig(t, c, "orders-1", Binding{Kind: def, Prefix: "orders"}))

	// The oracle: the same commands through an in-memory aggregate.
	rng := rand.New(rand.NewPCG(1, 2))
	oracle := map[string]*aggregates.Root[order.State]{}
	wantStatus := map[string]aggregates.ResultStatus{}
	perAgg := make([][]*kgo.Record, orders)
	now := time.Now()
	for i := range orders {
		id := fmt.Sprintf("o-%d", i)
		root := def.New(id)
		oracle[id] = root
		for _, payload := range orderCommands(rng, perOrder) {
			cmd, err := def.NewCommand(id, payload, aggregates.Metadata{Actor: "test"})
			if err != nil {
				t.Fatal(err)
			}
			events, err := root.Execute(&cmd, now)
			wantStatus[cmd.ID.String()] = aggregates.ResultFor(&cmd, "order", root.Version(), events, err).Status
			v, _ := cmd.Encode()
			perAgg[i] = append(perAgg[i], &kgo.Record{Topic: names.Commands, Key: []byte(id), Value: v})
		}
	}
	// Interleave the orders' commands as many producers would.
	var recs []*kgo.Record
	for j := range perOrder {
		for i := range orders {
			recs = append(recs, perAgg[i][j])
		}
	}
	produceAll(t, newProducer(t, c), recs)

	results := waitResults(t, c, names.Results, len(recs), 120*time.Second)
	if len(results) != len(recs) {
		t.Fatalf("%d results for %d commands", len(results), len(recs))
	}
	for id, want := range wantStatus {
		if got := results[id].Status; got != want {
			t.Errorf("command %s: status %s, want %s (%s)", id, got, want, results[id].Reason)
		}
	}
	events := eventsByAggregate(t, c, def, names.Events, partitions)
	latest := map[string]json.RawMessage{}
	for _, r := range readAll(t, c, names.State) {
		latest[string(r.Key)] = r.Value
	}
	for id, want := range oracle {
		got := def.New(id)
		if err := got.Load(events[id]); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if got.Version() != want.Version() || !reflect.DeepEqual(got.State(), want.State()) {
			t.Errorf("%s: events give version %d state %+v, commands imply version %d state %+v", id, got.Version(), got.State(), want.Version(), want.State())
		}
		if want.Version() >= 0 {
			wantState, _ := want.MarshalState()
			if string(latest[id]) != string(wantState) {
				t.Errorf("%s: state topic has %s, want %s", id, latest[id], wantState)
			}
		}
	}
}
