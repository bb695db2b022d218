package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/topics"
)

// readTopic reads topic from the start until it has n records.
func readTopic(t testing.TB, c *kfake.Cluster, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := kafkatest.Client(t, c, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	ctx := testContext(t, 10*time.Second)
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: have %d of %d records", topic, len(out), n)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func TestPublishPlacesCommandsInTheMurmur2PartitionOfTheirAggregate(t *testing.T) {
	c := startCluster(t, "orders", "reference")
	p := newProducer(t, c)
	ctx := testContext(t, 10*time.Second)

	const n = 300
	var cmds []aggregates.Command
	for i := range n {
		cmds = append(cmds, createOrder(t, fmt.Sprintf("order-%d-%s", i, strings.Repeat("x", i%7))))
	}
	for _, cmd := range cmds[:n/2] {
		if err := p.Publish(ctx, "orders", cmd); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.PublishAll(ctx, "orders", cmds[n/2:]); err != nil {
		t.Fatal(err)
	}

	// What a franz-go producer with default settings picks for each key.
	ref := kafkatest.Client(t, c)
	want := map[string]int32{}
	for _, cmd := range cmds {
		r := &kgo.Record{Topic: topics.For("reference").Commands, Key: []byte(cmd.AggregateID)}
		if err := ref.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		want[cmd.AggregateID] = r.Partition
	}

	owner := topics.NewOwner()
	used := map[int32]bool{}
	for _, r := range readTopic(t, c, topics.For("orders").Commands, n) {
		got, err := aggregates.DecodeCommand(r.Value)
		if err != nil {
			t.Fatalf("record %s: %v", r.Key, err)
		}
		if string(r.Key) != got.AggregateID {
			t.Errorf("record key %q, want the aggregate id %q", r.Key, got.AggregateID)
		}
		if r.Partition != want[got.AggregateID] {
			t.Errorf("%s went to partition %d; a default franz-go producer picks %d", got.AggregateID, r.Partition, want[got.AggregateID])
		}
		if o := owner.Of(r.Key, partitions); r.Partition != o {
			t.Errorf("%s went to partition %d; its owner partition is %d", got.AggregateID, r.Partition, o)
		}
		used[r.Partition] = true
	}
	if len(used) != partitions {
		t.Errorf("%d keys used only partitions %v", n, used)
	}
}

func TestSendReturnsTheResultOfItsCommand(t *testing.T) {
	kind := order.Definition()
	tests := []struct {
		name    string
		payload any
		status  aggregates.ResultStatus
		code    string
		version int64
	}{
		{"a valid command is accepted with the new version", order.CreateOrder{UserID: "u1"}, aggregates.StatusAccepted, "", 0},
		{"a refused command comes back rejected with its code", order.AddLine{ProductID: 1, Quantity: 1}, aggregates.StatusRejected, order.CodeNotFound, -1},
	}
	c := startCluster(t, "orders")
	runFakeProcessor(t, c, "orders", fakeOptions{})
	p := newProducer(t, c)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("order-%d", i)
			cmd, err := kind.NewCommand(id, tt.payload, aggregates.Metadata{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.Send(testContext(t, 10*time.Second), "orders", cmd)
			if err != nil {
				t.Fatal(err)
			}
			if res.CommandID != cmd.ID.String() || res.AggregateID != id || res.Status != tt.status || res.Code != tt.code || res.Version != tt.version {
				t.Errorf("result %+v, want command %s of %s %s code %q version %d", res, cmd.ID, id, tt.status, tt.code, tt.version)
			}
		})
	}
}

// A responder that answers the instant it sees a command, against a fresh
// Producer every time: the result can be written before a lazily started
// consumer would have begun.
func TestSendSeesResultsOfAResponderThatAnswersAtOnce(t *testing.T) {
	c := startCluster(t, "orders")
	runFakeProcessor(t, c, "orders", fakeOptions{})
	for i := range 20 {
		p, err := client.NewProducer(client.ProducerConfig{Kafka: kafkatest.Kafka(c)})
		if err != nil {
			t.Fatal(err)
		}
		cmd := createOrder(t, fmt.Sprintf("fast-%d", i))
		res, err := p.Send(testContext(t, 5*time.Second), "orders", cmd)
		p.Close()
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if res.CommandID != cmd.ID.String() || res.Status != aggregates.StatusAccepted {
			t.Fatalf("send %d: result %+v", i, res)
		}
	}
}

func TestSendGivesUpWhenItsContextEnds(t *testing.T) {
	c := startCluster(t, "orders") // no processor: no result ever comes
	p := newProducer(t, c)
	cmd := createOrder(t, "lonely")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := p.Send(ctx, "orders", cmd)
	if !errors.Is(err, client.ErrNoResult) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send returned %+v, %v; want ErrNoResult and DeadlineExceeded", res, err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Send took %v after a 300ms timeout", took)
	}
	if !strings.Contains(err.Error(), cmd.ID.String()) || !strings.Contains(err.Error(), "Resending the same command is safe") {
		t.Errorf("error %q should name the command and say what to do", err)
	}
	// It was published all the same.
	if recs := readTopic(t, c, topics.For("orders").Commands, 1); string(recs[0].Key) != "lonely" {
		t.Errorf("published %q", recs[0].Key)
	}
}

func TestConcurrentSendsEachGetTheirOwnResult(t *testing.T) {
	c := startCluster(t, "orders")
	runFakeProcessor(t, c, "orders", fakeOptions{})
	p := newProducer(t, c)
	ctx := testContext(t, 20*time.Second)
	const senders, each = 32, 5
	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("order-%d", s)
			for i := range each {
				var payload any = order.AddLine{ProductID: int64(i), Quantity: 1, UnitPrice: 10}
				if i == 0 {
					payload = order.CreateOrder{UserID: "u"}
				}
				cmd, err := order.Definition().NewCommand(id, payload, aggregates.Metadata{})
				if err != nil {
					errs <- err
					return
				}
				res, err := p.Send(ctx, "orders", cmd)
				if err != nil {
					errs <- fmt.Errorf("%s command %d: %w", id, i, err)
					return
				}
				if res.CommandID != cmd.ID.String() || res.AggregateID != id || res.Status != aggregates.StatusAccepted || res.Version != int64(i) {
					errs <- fmt.Errorf("%s command %d: result %+v", id, i, res)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestSendAllReturnsResultsInTheOrderOfTheCommands(t *testing.T) {
	c := startCluster(t, "orders")
	runFakeProcessor(t, c, "orders", fakeOptions{ignore: func(cmd aggregates.Command) bool { return strings.HasPrefix(cmd.AggregateID, "ignored") }})
	p := newProducer(t, c)

	t.Run("all answered", func(t *testing.T) {
		var cmds []aggregates.Command
		for i := range 100 {
			cmds = append(cmds, createOrder(t, fmt.Sprintf("batch-%d", i)))
		}
		cmds = append(cmds, cmds[7]) // the same command twice: a duplicate
		results, err := p.SendAll(testContext(t, 10*time.Second), "orders", cmds)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range results {
			if r.CommandID != cmds[i].ID.String() {
				t.Errorf("results[%d] is for %s, want %s", i, r.CommandID, cmds[i].ID)
			}
		}
	})
	t.Run("some never answered", func(t *testing.T) {
		cmds := []aggregates.Command{createOrder(t, "answered-1"), createOrder(t, "ignored-1"), createOrder(t, "answered-2")}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		results, err := p.SendAll(ctx, "orders", cmds)
		if !errors.Is(err, client.ErrNoResult) || !strings.Contains(err.Error(), "1 of 3 commands") {
			t.Fatalf("err = %v, want ErrNoResult for 1 of 3", err)
		}
		if results[0].Status != aggregates.StatusAccepted || results[2].Status != aggregates.StatusAccepted || results[1].CommandID != "" {
			t.Errorf("results %+v: want 0 and 2 accepted, 1 empty", results)
		}
	})
}

// The results topic is written in transactions; a result in an aborted one
// does not count.
func TestSendIgnoresResultsOfAbortedTransactions(t *testing.T) {
	c := startCluster(t, "orders")
	names := topics.For("orders")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	txn := kafkatest.Client(t, c, kgo.TransactionalID("responder"), kgo.ConsumeTopics(names.Commands), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			txn.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
				cmd, _ := aggregates.DecodeCommand(r.Value)
				for _, commit := range []bool{false, true} {
					res := aggregates.Result{CommandID: cmd.ID.String(), Status: aggregates.StatusRejected, Code: "aborted"}
					if commit {
						res = aggregates.Result{CommandID: cmd.ID.String(), Status: aggregates.StatusAccepted}
					}
					v, _ := json.Marshal(res)
					if txn.BeginTransaction() != nil {
						return
					}
					txn.ProduceSync(ctx, &kgo.Record{Topic: names.Results, Key: []byte(res.CommandID), Value: v})
					if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
						return
					}
				}
			})
		}
	}()
	defer func() { cancel(); <-done }()
	p := newProducer(t, c)
	res, err := p.Send(testContext(t, 10*time.Second), "orders", createOrder(t, "txn"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != aggregates.StatusAccepted {
		t.Errorf("got %+v, the result of an aborted transaction", res)
	}
}

func TestSendExplainsAMissingResultsTopic(t *testing.T) {
	c := startCluster(t) // no topics at all
	p := newProducer(t, c)
	_, err := p.Send(testContext(t, 5*time.Second), "orders", createOrder(t, "x"))
	if !errors.Is(err, client.ErrTopicMissing) || !strings.Contains(err.Error(), "orders.results") || !strings.Contains(err.Error(), "chronicle topics") {
		t.Fatalf("err = %v, want ErrTopicMissing naming orders.results and the fix", err)
	}
}

func TestCloseEndsWaitingSendsAndRefusesNewOnes(t *testing.T) {
	c := startCluster(t, "orders")
	p, err := client.NewProducer(client.ProducerConfig{Kafka: kafkatest.Kafka(c)})
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() {
		_, err := p.Send(testContext(t, 10*time.Second), "orders", createOrder(t, "waiting"))
		sent <- err
	}()
	// Wait until the command is published, so Send is waiting.
	readTopic(t, c, topics.For("orders").Commands, 1)
	p.Close()
	select {
	case err := <-sent:
		if !errors.Is(err, client.ErrClosed) {
			t.Errorf("waiting Send returned %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Send still waiting 5s after Close")
	}
	if err := p.Publish(context.Background(), "orders", createOrder(t, "late")); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Publish after Close returned %v, want ErrClosed", err)
	}
	if _, err := p.Send(context.Background(), "orders", createOrder(t, "late")); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Send after Close returned %v, want ErrClosed", err)
	}
	p.Close() // idempotent
}

func TestPublishRefusesCommandsTheProcessorCouldNotRoute(t *testing.T) {
	c := startCluster(t, "orders")
	p := newProducer(t, c)
	good := createOrder(t, "good")
	tests := []struct {
		name   string
		prefix string
		edit   func(*aggregates.Command)
		want   string
	}{
		{"a command without aggregate id", "orders", func(c *aggregates.Command) { c.AggregateID = "" }, "no aggregate id"},
		{"a command with an overlong aggregate id", "orders", func(c *aggregates.Command) { c.AggregateID = strings.Repeat("a", 300) }, "longer than"},
		{"a command without type", "orders", func(c *aggregates.Command) { c.Type = "" }, "no type"},
		{"a command with the zero id", "orders", func(c *aggregates.Command) { c.ID = ulid.ULID{} }, "zero ULID"},
		{"an empty prefix", "", func(*aggregates.Command) {}, "empty topic prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := good
			tt.edit(&cmd)
			err := p.Publish(testContext(t, 5*time.Second), tt.prefix, cmd)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Publish = %v, want an error about %q", err, tt.want)
			}
		})
	}
}

func TestNewProducerNeedsBrokers(t *testing.T) {
	if _, err := client.NewProducer(client.ProducerConfig{}); err == nil || !strings.Contains(err.Error(), "Kafka.Brokers") {
		t.Errorf("NewProducer without brokers = %v, want an error naming Kafka.Brokers", err)
	}
}

// Slow offset listings make a consumer that finds "the end" only after the
// command was published start past a result written meanwhile. Send lists
// before it publishes, so it still sees the result.
func TestSendSeesResultsWrittenWhileOffsetsAreListedSlowly(t *testing.T) {
	c := startCluster(t, "orders")
	runFakeProcessor(t, c, "orders", fakeOptions{})
	c.ControlKey(int16(kmsg.ListOffsets), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { time.Sleep(300 * time.Millisecond) })
		return nil, nil, false
	})
	for i := range 3 {
		p, err := client.NewProducer(client.ProducerConfig{Kafka: kafkatest.Kafka(c)})
		if err != nil {
			t.Fatal(err)
		}
		cmd := createOrder(t, fmt.Sprintf("slow-%d", i))
		res, err := p.Send(testContext(t, 5*time.Second), "orders", cmd)
		p.Close()
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if res.CommandID != cmd.ID.String() {
			t.Fatalf("send %d: result %+v", i, res)
		}
	}
}
