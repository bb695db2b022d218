package client_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/topics"
)

// sharingPartitionWith returns an id made from pattern (with %d) whose owner
// partition is the one of id.
func sharingPartitionWith(t testing.TB, id, pattern string) string {
	t.Helper()
	owner := topics.NewOwner()
	want := owner.Of([]byte(id), partitions)
	for i := range 1000 {
		other := fmt.Sprintf(pattern, i)
		if other != id && owner.Of([]byte(other), partitions) == want {
			return other
		}
	}
	t.Fatalf("no id like %q shares a partition with %q", pattern, id)
	return ""
}

func TestReadHistoryReturnsOneAggregatesCommittedEventsInVersionOrder(t *testing.T) {
	c := startCluster(t, "orders")
	const target = "order-target"
	neighbour := sharingPartitionWith(t, target, "order-%d")
	trap := sharingPartitionWith(t, target, target+"@%d") // its keys start with "order-target@"
	want := orderHistory(t, target, 4)
	nb, tr := orderHistory(t, neighbour, 3), orderHistory(t, trap, 2)
	rec := func(e aggregates.Event) *kgo.Record { return eventRecord(t, "orders", e) }

	produce(t, c, rec(nb[0]), rec(want[0]), rec(tr[0]), rec(want[1]), rec(nb[1]))
	produceTxn(t, c, "processor", true, rec(want[2]), rec(tr[1]), rec(want[3]), rec(nb[2]))
	ghost := orderHistory(t, target, 6)[5]
	produceTxn(t, c, "processor", false, rec(ghost), rec(nb[3]))
	produce(t, c, rec(want[4]), rec(tr[2]), rec(want[1])) // want[1] again: a second copy
	// A transaction left open: its events are not history yet, and
	// ReadHistory must not wait for it.
	open := kafkatest.Client(t, c, kgo.RecordPartitioner(topics.Partitioner()), kgo.TransactionalID("open"))
	if err := open.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := open.ProduceSync(testContext(t, 5*time.Second), rec(ghost)).FirstErr(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	got, err := client.ReadHistory(testContext(t, 10*time.Second), kafkatest.Kafka(c), order.Definition(), "orders", target)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("ReadHistory took %v", took)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].ID != want[i].ID || got[i].Version != int64(i) || got[i].Subject != target {
			t.Errorf("event %d: %s v%d of %s, want %s v%d", i, got[i].ID, got[i].Version, got[i].Subject, want[i].ID, i)
		}
	}
	// The history rebuilds the order at any version.
	a := order.Definition().New(target)
	if err := aggregates.Rebuild(a, got, aggregates.UpToVersion(2)); err != nil {
		t.Fatal(err)
	}
	if s := a.State(); a.Version() != 2 || len(s.Lines) != 2 || s.Total != 200 {
		t.Errorf("at version 2: version %d, state %+v", a.Version(), s)
	}
}

func TestReadHistoryOfAnAggregateWithoutEventsIsEmpty(t *testing.T) {
	c := startCluster(t, "orders")
	ctx := testContext(t, 10*time.Second)
	got, err := client.ReadHistory(ctx, kafkatest.Kafka(c), order.Definition(), "orders", "nobody")
	if err != nil || len(got) != 0 {
		t.Fatalf("empty partition: %v, %v", got, err)
	}
	somebody := sharingPartitionWith(t, "nobody", "order-%d")
	produce(t, c, eventRecord(t, "orders", orderHistory(t, somebody, 0)[0]))
	got, err = client.ReadHistory(ctx, kafkatest.Kafka(c), order.Definition(), "orders", "nobody")
	if err != nil || len(got) != 0 {
		t.Fatalf("partition of others: %v, %v", got, err)
	}
}

func TestReadHistoryRefusesAHistoryWithAnUndecodableEvent(t *testing.T) {
	c := startCluster(t, "orders")
	evs := orderHistory(t, "broken", 1)
	produce(t, c, eventRecord(t, "orders", evs[0]),
		&kgo.Record{Topic: topics.For("orders").Events, Partition: topics.NewOwner().Of([]byte("broken"), partitions), Key: topics.EventKey("broken", 1), Value: []byte("{")})
	_, err := client.ReadHistory(testContext(t, 10*time.Second), kafkatest.Kafka(c), order.Definition(), "orders", "broken")
	if !errors.Is(err, aggregates.ErrMalformed) || !strings.Contains(err.Error(), "offset 1") {
		t.Fatalf("ReadHistory = %v, want ErrMalformed at offset 1", err)
	}
}

func TestReadHistoryArgumentsAndMissingTopic(t *testing.T) {
	c := startCluster(t)
	ctx := testContext(t, 5*time.Second)
	_, err := client.ReadHistory(ctx, kafkatest.Kafka(c), order.Definition(), "orders", "x")
	if !errors.Is(err, client.ErrTopicMissing) || !strings.Contains(err.Error(), "orders.events") {
		t.Errorf("missing topic: %v, want ErrTopicMissing naming orders.events", err)
	}
	_, err = client.ReadHistory(ctx, client.Kafka{}, nil, "", "")
	for _, w := range []string{"Kafka.Brokers", "no decoder", "empty topic prefix", "empty aggregate id"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("bad arguments: %v, want it to mention %q", err, w)
		}
	}
}
