package client_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/topics"
)

func TestScanEventsHandsOutEveryCommittedRecordOnceInOffsetOrderPerPartition(t *testing.T) {
	c := startCluster(t, "orders")
	rec := func(e aggregates.Event) *kgo.Record { return eventRecord(t, "orders", e) }
	var (
		committed = map[string]int{} // events per aggregate
		recs      []*kgo.Record
	)
	for i := range 8 {
		id := fmt.Sprintf("order-%d", i)
		h := orderHistory(t, id, i%3)
		committed[id] = len(h)
		for _, e := range h {
			recs = append(recs, rec(e))
		}
	}
	produce(t, c, recs[:len(recs)/2]...)
	produceTxn(t, c, "processor", true, recs[len(recs)/2:]...)
	produceTxn(t, c, "processor", false, rec(orderHistory(t, "order-ghost", 0)[0]))

	scan := func(ids ...string) (map[string][]int64, client.ScannedEvents) {
		t.Helper()
		got := map[string][]int64{}
		last := map[int32]int64{}
		scanned, err := client.ScanEvents(testContext(t, 10*time.Second), kafkatest.Kafka(c), client.EventScan{Prefix: "orders", AggregateIDs: ids}, func(batch []client.EventRecord) error {
			for _, r := range batch {
				if prev, seen := last[r.Partition]; seen && r.Offset <= prev {
					t.Errorf("partition %d: offset %d after %d", r.Partition, r.Offset, prev)
				}
				last[r.Partition] = r.Offset
				if want := topics.NewOwner().Of([]byte(r.AggregateID), partitions); r.Partition != want {
					t.Errorf("%s handed out from partition %d, its owner is %d", r.AggregateID, r.Partition, want)
				}
				got[r.AggregateID] = append(got[r.AggregateID], r.Offset)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got, scanned
	}

	all, scanned := scan()
	if scanned.Partitions != partitions || len(scanned.End) != partitions {
		t.Errorf("scanned %+v, want %d partitions, each with its end", scanned, partitions)
	}
	if len(all) != len(committed) {
		t.Errorf("scanned the records of %d aggregates, want %d: %v", len(all), len(committed), slices.Sorted(maps.Keys(all)))
	}
	for id, n := range committed {
		if len(all[id]) != n {
			t.Errorf("%s: %d records, want %d", id, len(all[id]), n)
		}
	}

	some, scanned := scan("order-2", "order-5")
	if len(some) != 2 || len(some["order-2"]) != committed["order-2"] || len(some["order-5"]) != committed["order-5"] {
		t.Errorf("scan of two aggregates handed out %v", some)
	}
	owner := topics.NewOwner()
	for p := range scanned.End {
		if p != owner.Of([]byte("order-2"), partitions) && p != owner.Of([]byte("order-5"), partitions) {
			t.Errorf("scan of two aggregates read partition %d, which owns neither", p)
		}
	}
}
