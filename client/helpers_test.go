package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/topics"
)

// partitions is the partition count of every test topic.
const partitions = 6

// newCluster starts a one-broker kfake cluster on 127.0.0.1 with the topics
// of prefixes created, for the examples, which have no testing.T. The
// caller closes it.
func newCluster(prefixes ...string) (*kfake.Cluster, error) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond), kafkatest.Topics(partitions, prefixes...))
	if err != nil {
		return nil, fmt.Errorf("starting kfake: %w", err)
	}
	return c, nil
}

// startCluster starts a cluster with the topics of prefixes created, closed
// at the end of the test.
func startCluster(t testing.TB, prefixes ...string) *kfake.Cluster {
	t.Helper()
	return kafkatest.Start(t, kafkatest.Topics(partitions, prefixes...))
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newProducer(t testing.TB, c *kfake.Cluster) *client.Producer {
	t.Helper()
	p, err := client.NewProducer(client.ProducerConfig{Kafka: kafkatest.Kafka(c)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// fakeProcessor stands in for the real processor: it reads commands, runs
// them on in-memory aggregates, and writes their events (to the aggregate's
// command partition, keyed id@version) and results (keyed by command id,
// hashed). Non-transactional, unlike the real one, which is all these tests
// need.
type fakeProcessor struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// fakeOptions tunes a fakeProcessor.
type fakeOptions struct {
	// ignore, when it returns true, leaves a command without result.
	ignore func(cmd aggregates.Command) bool
}

// startFakeProcessor runs a fakeProcessor for prefix on c until stop.
func startFakeProcessor(c *kfake.Cluster, prefix string, kind aggregates.Kind, o fakeOptions) (*fakeProcessor, error) {
	names := topics.For(prefix)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumeTopics(names.Commands), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond), kgo.RecordPartitioner(topics.Partitioner()),
		kgo.ProducerLinger(0))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeProcessor{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer cl.Close()
		aggs := map[string]aggregates.Aggregate{}
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				cmd, err := aggregates.DecodeCommand(r.Value)
				if err != nil || (o.ignore != nil && o.ignore(cmd)) {
					return
				}
				a := aggs[cmd.AggregateID]
				if a == nil {
					a = kind.NewAggregate(cmd.AggregateID)
					aggs[cmd.AggregateID] = a
				}
				events, err := a.Execute(&cmd, time.Now())
				a.ClearChanges()
				var recs []*kgo.Record
				for i := range events {
					v, _ := events[i].Encode()
					recs = append(recs, &kgo.Record{Topic: names.Events, Partition: r.Partition, Key: topics.EventKey(cmd.AggregateID, events[i].Version), Value: v})
				}
				res := aggregates.ResultFor(&cmd, kind.Name(), a.Version(), events, err)
				v, _ := json.Marshal(res)
				recs = append(recs, &kgo.Record{Topic: names.Results, Partition: -1, Key: []byte(res.CommandID), Value: v})
				_ = cl.ProduceSync(ctx, recs...).FirstErr()
			})
		}
	}()
	return f, nil
}

// stop stops the fake processor and waits for it.
func (f *fakeProcessor) stop() {
	f.cancel()
	<-f.done
}

// runFakeProcessor is startFakeProcessor for tests, stopped at the end.
func runFakeProcessor(t testing.TB, c *kfake.Cluster, prefix string, o fakeOptions) {
	t.Helper()
	f, err := startFakeProcessor(c, prefix, order.Definition(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.stop)
}

// createOrder returns a CreateOrder command for id.
func createOrder(t testing.TB, id string) aggregates.Command {
	t.Helper()
	cmd, err := order.Definition().NewCommand(id, order.CreateOrder{UserID: "user-" + id}, aggregates.Metadata{Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

// orderHistory returns the events of an order with lines lines: versions
// 0..lines.
func orderHistory(t testing.TB, id string, lines int) []aggregates.Event {
	t.Helper()
	kind := order.Definition()
	a := kind.New(id)
	var out []aggregates.Event
	run := func(payload any) {
		cmd, err := kind.NewCommand(id, payload, aggregates.Metadata{})
		if err != nil {
			t.Fatal(err)
		}
		evs, err := a.Execute(&cmd, time.Now())
		if err != nil {
			t.Fatalf("executing %T on %s: %v", payload, id, err)
		}
		out = append(out, evs...)
	}
	run(order.CreateOrder{UserID: "user-" + id})
	for i := range lines {
		run(order.AddLine{ProductID: int64(i + 1), Quantity: 1, UnitPrice: 100})
	}
	return out
}

// eventRecord is an event as the processor writes it.
func eventRecord(t testing.TB, prefix string, e aggregates.Event) *kgo.Record {
	t.Helper()
	v, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topics.For(prefix).Events, Key: topics.EventKey(e.Subject, e.Version), Value: v,
		Partition: topics.NewOwner().Of([]byte(e.Subject), partitions)}
}

// produce writes recs with a client that honours explicit partitions.
func produce(t testing.TB, c *kfake.Cluster, recs ...*kgo.Record) {
	t.Helper()
	cl := kafkatest.Client(t, c, kgo.RecordPartitioner(topics.Partitioner()))
	if err := cl.ProduceSync(testContext(t, 10*time.Second), recs...).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
}

// produceTxn writes recs in one transaction and commits or aborts it.
func produceTxn(t testing.TB, c *kfake.Cluster, txnID string, commit bool, recs ...*kgo.Record) {
	t.Helper()
	cl := kafkatest.Client(t, c, kgo.RecordPartitioner(topics.Partitioner()), kgo.TransactionalID(txnID))
	ctx := testContext(t, 10*time.Second)
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("producing in a transaction: %v", err)
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		t.Fatalf("ending the transaction: %v", err)
	}
}
