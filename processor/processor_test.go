package processor

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/topics"
)

func TestCountersEndToEnd(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	names := topics.For("counters")
	createTopics(t, c, "counters", 6)
	startProcessor(t, testConfig(t, c, "p1", Binding{Kind: kind, Prefix: "counters"}))

	const aggs, perAgg = 50, 20
	var recs []*kgo.Record
	want := map[string]int64{}
	for i := range aggs {
		id := fmt.Sprintf("c-%d", i)
		recs = append(recs, command(t, kind, names.Commands, id, createCounter{}, nil))
		for j := 1; j < perAgg; j++ {
			recs = append(recs, command(t, kind, names.Commands, id, addCounter{N: int64(j)}, nil))
			want[id] += int64(j)
		}
	}
	produceAll(t, newProducer(t, c), recs)
	results := waitResults(t, c, names.Results, len(recs), 60*time.Second)
	for _, r := range results {
		if r.Status != aggregates.StatusAccepted {
			t.Fatalf("result %+v", r)
		}
	}
	events := eventsByAggregate(t, c, kind, names.Events, 6)
	for id, total := range want {
		a := kind.New(id)
		if err := a.Load(events[id]); err != nil {
			t.Fatal(err)
		}
		if a.State().Value != total || a.Version() != perAgg-1 {
			t.Errorf("%s: value %d version %d, want %d and %d", id, a.State().Value, a.Version(), total, perAgg-1)
		}
	}
}
