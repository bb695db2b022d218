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

// TestTheProducerDoesNotLingerUnlessTold checks the session client's
// linger: none by default (End flushes anyway; see docs/architecture.md),
// and what Config.KafkaOptions says when it says so.
func TestTheProducerDoesNotLingerUnlessTold(t *testing.T) {
	c := startCluster(t)
	createTopics(t, c, "linger", 1)
	for _, tc := range []struct {
		opts []kgo.Opt
		want time.Duration
	}{{nil, 0}, {[]kgo.Opt{kgo.ProducerLinger(5 * time.Millisecond)}, 5 * time.Millisecond}} {
		cfg := testConfig(t, c, "linger-1", Binding{Kind: counterKind(), Prefix: "linger"})
		cfg.Partitions, cfg.KafkaOptions = 1, tc.opts
		rn := startProcessor(t, cfg)
		waitStat(t, "the session", func() int64 {
			if rn.p.sess.Load() == nil {
				return 0
			}
			return 1
		}, 1)
		if got := rn.p.sess.Load().Client().OptValue(kgo.ProducerLinger); got != tc.want {
			t.Errorf("KafkaOptions %v: the session's producer lingers %v, want %v", tc.opts, got, tc.want)
		}
		rn.stop(t)
	}
}
