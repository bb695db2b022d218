package account_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/examples/account"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/topics"
)

// A Deposited of schema version 1, as the release before version 2 wrote it
// to Kafka, is read back from the events topic as version 2.
func TestAVersion1RecordInTheEventsTopicIsReadAsVersion2(t *testing.T) {
	const partitions = 3
	c := kafkatest.Start(t, kafkatest.Topics(partitions, "accounts"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	const id = "acc-v1-topic"
	cl := kafkatest.Client(t, c, kgo.RecordPartitioner(topics.Partitioner()))
	part := topics.NewOwner().Of([]byte(id), partitions)
	rec := func(version int64, doc []byte) *kgo.Record {
		return &kgo.Record{Topic: topics.For("accounts").Events, Partition: part, Key: topics.EventKey(id, version), Value: doc}
	}
	opened := []byte(`{"specversion":"1.0","id":"01KAA0000000000000000000A0","source":"/chronicle/account","type":"account.Opened","subject":"acc-v1-topic","time":"2026-01-02T03:04:05Z","aggregatetype":"account","aggregateversion":0,"schemaversion":1,"data":{"owner":"ada","currency":"EUR"}}`)
	if err := cl.ProduceSync(ctx, rec(0, opened), rec(1, eventDoc(id, 1, 1, `{"amount":19.99}`))).FirstErr(); err != nil {
		t.Fatal(err)
	}

	history, err := client.ReadHistory(ctx, client.Kafka{Brokers: c.ListenAddrs()}, account.Definition(), "accounts", id)
	if err != nil {
		t.Fatal(err)
	}
	if len(history) != 2 {
		t.Fatalf("history %+v, want 2 events", history)
	}
	if d := history[1]; d.Data != (account.Deposited{AmountCents: 1999, Currency: "EUR"}) || d.SchemaVersion != 2 {
		t.Errorf("the v1 record read as %+v (schema %d), want 1999 cents in EUR at schema 2", d.Data, d.SchemaVersion)
	}
	a := account.Definition().New(id)
	if err := aggregates.Rebuild(a, history, nil); err != nil {
		t.Fatal(err)
	}
	if a.State().BalanceCents != 1999 {
		t.Errorf("balance %d, want 1999", a.State().BalanceCents)
	}
}
