package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/internal/syncbuf"
	"github.com/chronicle-es/chronicle/topics"
)

// collector records handled events; safe for concurrent use.
type collector struct {
	mu     sync.Mutex
	events []aggregates.Event
	notify chan struct{}
}

func newCollector() *collector { return &collector{notify: make(chan struct{}, 1)} }

func (c *collector) handle(_ context.Context, e aggregates.Event) error {
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) snapshot() []aggregates.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]aggregates.Event(nil), c.events...)
}

// waitFor waits until the collector holds n events or ctx ends.
func (c *collector) waitFor(ctx context.Context, n int) ([]aggregates.Event, error) {
	for {
		if evs := c.snapshot(); len(evs) >= n {
			return evs, nil
		}
		select {
		case <-c.notify:
		case <-ctx.Done():
			return c.snapshot(), fmt.Errorf("have %d of %d events: %w", len(c.snapshot()), n, ctx.Err())
		}
	}
}

// runSubscriber runs s in the background; the returned function stops it
// and returns Run's error.
func runSubscriber(t testing.TB, s *client.Subscriber) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				err = errors.New("Run did not return within 20s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return stop
}

// newSubscriber builds a Subscriber of the orders events.
func newSubscriber(t testing.TB, cfg client.SubscriberConfig) *client.Subscriber {
	t.Helper()
	if cfg.Prefixes == nil {
		cfg.Prefixes = []string{"orders"}
	}
	if cfg.Decoder == nil {
		cfg.Decoder = order.Definition()
	}
	cfg.CommitInterval = 100 * time.Millisecond
	s, err := client.NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeOrders returns the histories of n orders "order-<i>" (versions
// 0..lines each), by id.
func writeOrders(t testing.TB, n, lines int) map[string][]aggregates.Event {
	t.Helper()
	out := map[string][]aggregates.Event{}
	for i := range n {
		id := fmt.Sprintf("order-%d", i)
		out[id] = orderHistory(t, id, lines)
	}
	return out
}

// recordsOf returns the records of hist, interleaved by version so that
// every partition mixes several aggregates.
func recordsOf(t testing.TB, prefix string, hist map[string][]aggregates.Event) []*kgo.Record {
	t.Helper()
	var recs []*kgo.Record
	for v := 0; ; v++ {
		added := false
		for i := 0; i < len(hist); i++ {
			evs := hist[fmt.Sprintf("order-%d", i)]
			if v < len(evs) {
				recs = append(recs, eventRecord(t, prefix, evs[v]))
				added = true
			}
		}
		if !added {
			return recs
		}
	}
}

// checkInOrder checks that got holds exactly the events of want, each
// aggregate's in version order.
func checkInOrder(t testing.TB, got []aggregates.Event, want map[string][]aggregates.Event) {
	t.Helper()
	next := map[string]int{}
	for _, e := range got {
		evs, ok := want[e.Subject]
		if !ok {
			t.Errorf("unexpected event of %q", e.Subject)
			continue
		}
		i := next[e.Subject]
		if i >= len(evs) || evs[i].ID != e.ID || e.Version != int64(i) {
			t.Errorf("%s: got version %d (%s) at position %d", e.Subject, e.Version, e.ID, i)
		}
		next[e.Subject] = i + 1
	}
	for id, evs := range want {
		if next[id] != len(evs) {
			t.Errorf("%s: handled %d of %d events", id, next[id], len(evs))
		}
	}
}

func TestSubscriberInAGroupHandlesEventsInOrderAndCommitsThem(t *testing.T) {
	c := startCluster(t, "orders")
	hist := writeOrders(t, 20, 4)
	produce(t, c, recordsOf(t, "orders", hist)...)

	// Calls for one partition must never overlap.
	var busy [partitions]atomic.Bool
	owner := topics.NewOwner()
	col := newCollector()
	var overlap atomic.Bool
	s := newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), Group: "projection", FromBeginning: true,
		Handler: func(ctx context.Context, e aggregates.Event) error {
			p := owner.Of([]byte(e.Subject), partitions)
			if !busy[p].CompareAndSwap(false, true) {
				overlap.Store(true)
			}
			time.Sleep(time.Millisecond)
			busy[p].Store(false)
			return col.handle(ctx, e)
		}})
	stop := runSubscriber(t, s)
	got, err := col.waitFor(testContext(t, 10*time.Second), 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkInOrder(t, got, hist)
	if overlap.Load() {
		t.Error("the handler ran twice at once for one partition")
	}

	// Run committed every handled event before returning.
	adm := kadm.NewClient(kafkatest.Client(t, c))
	ctx := testContext(t, 5*time.Second)
	committed, err := adm.FetchOffsets(ctx, "projection")
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics.For("orders").Events)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset == 0 {
			return
		}
		if got, _ := committed.Lookup(o.Topic, o.Partition); got.At != o.Offset {
			t.Errorf("partition %d: committed %d, end %d", o.Partition, got.At, o.Offset)
		}
	})
}

// Two members of one group share the partitions; when the second joins, the
// first stops its revoked partitions and commits what it handled, so every
// event is handled exactly once here and in order within each member.
func TestSubscribersOfOneGroupShareThePartitionsAcrossARebalance(t *testing.T) {
	c := startCluster(t, "orders")
	first := writeOrders(t, 30, 1)
	produce(t, c, recordsOf(t, "orders", first)...)
	a, b := newCollector(), newCollector()
	runSubscriber(t, newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), Group: "shared", FromBeginning: true, Handler: a.handle}))
	if _, err := a.waitFor(testContext(t, 10*time.Second), 60); err != nil {
		t.Fatal(err)
	}
	runSubscriber(t, newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), Group: "shared", FromBeginning: true, Handler: b.handle}))
	// Write the next versions while the group rebalances.
	all := writeOrders(t, 30, 6)
	ctx := testContext(t, 20*time.Second)
	for v := 2; v <= 6; v++ {
		var recs []*kgo.Record
		for _, evs := range all {
			recs = append(recs, eventRecord(t, "orders", evs[v]))
		}
		produce(t, c, recs...)
		time.Sleep(300 * time.Millisecond)
	}
	for len(a.snapshot())+len(b.snapshot()) < 30*7 {
		select {
		case <-ctx.Done():
			t.Fatalf("handled %d+%d of %d events", len(a.snapshot()), len(b.snapshot()), 30*7)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if len(b.snapshot()) == 0 {
		t.Fatal("the second member never got a partition")
	}
	seen := map[string]int{}
	for _, member := range []*collector{a, b} {
		last := map[string]int64{}
		for _, e := range member.snapshot() {
			if v, ok := last[e.Subject]; ok && e.Version <= v {
				t.Errorf("%s: version %d after %d in one member", e.Subject, e.Version, v)
			}
			last[e.Subject] = e.Version
			seen[fmt.Sprintf("%s@%d", e.Subject, e.Version)]++
		}
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s handled %d times", k, n)
		}
	}
}

// orderV2 is the order aggregate as a later release defines it: LineAdded at
// schema version 2, with an upcaster from version 1. Its DecodeEvent reads
// what order.Definition() cannot.
func orderV2() *aggregates.Definition[order.State] {
	return aggregates.MustDefine("order",
		aggregates.When("OrderCreated", func(s *order.State, e order.OrderCreated) { s.UserID, s.Status = e.UserID, order.StatusNew }),
		aggregates.When("LineAdded", func(s *order.State, e order.LineAdded) { s.Total += e.Quantity * e.UnitPrice },
			aggregates.SchemaVersion(2), aggregates.Upcast(1, func(old json.RawMessage) (json.RawMessage, error) { return old, nil })),
		aggregates.Handle("CreateOrder", func(_ order.State, c order.CreateOrder) ([]any, error) { return []any{order.OrderCreated(c)}, nil }),
	)
}

// By default an event the decoder cannot read stops Run with an error naming
// the record; the group does not commit past it, so a restart with a decoder
// that reads it (a newer release) handles it and what follows.
func TestSubscriberStopsAtAnUndecodableEventAndDoesNotCommitPastIt(t *testing.T) {
	c := startCluster(t, "orders")
	evs := orderHistory(t, "order-0", 3)
	newer := evs[2]
	newer.SchemaVersion = 2 // written by a newer release
	part := topics.NewOwner().Of([]byte("order-0"), partitions)
	produce(t, c, eventRecord(t, "orders", evs[0]), eventRecord(t, "orders", evs[1]),
		eventRecord(t, "orders", newer), eventRecord(t, "orders", evs[3]))

	col := newCollector()
	var told []*client.RecordError
	s := newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), Group: "read-model", FromBeginning: true, Handler: col.handle,
		OnError: func(_ context.Context, err *client.RecordError) { told = append(told, err) }})
	err := s.Run(testContext(t, 10*time.Second))
	var re *client.RecordError
	if !errors.As(err, &re) || !errors.Is(err, aggregates.ErrSchemaVersion) {
		t.Fatalf("Run = %v, want a *RecordError matching ErrSchemaVersion", err)
	}
	if re.Offset != 2 || re.Partition != part || re.EventType != "order.LineAdded" || re.SchemaVersion != 2 || len(told) != 1 {
		t.Errorf("RecordError at %d/%d, type %q v%d (OnError told %d), want offset 2 of partition %d, order.LineAdded v2, told once",
			re.Partition, re.Offset, re.EventType, re.SchemaVersion, len(told), part)
	}
	for _, w := range []string{"orders.events", "offset 2", `"order.LineAdded"`, "schema version 2", "restart reads it again"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	checkInOrder(t, col.snapshot(), map[string][]aggregates.Event{"order-0": evs[:2]})

	// The group committed up to the undecodable event, not past it.
	committed, ferr := kadm.NewClient(kafkatest.Client(t, c)).FetchOffsets(testContext(t, 5*time.Second), "read-model")
	if ferr != nil {
		t.Fatal(ferr)
	}
	if o, _ := committed.Lookup(topics.For("orders").Events, part); o.At != 2 {
		t.Fatalf("committed offset %d, want 2 (the undecodable event)", o.At)
	}

	// The newer release reads it.
	col2 := newCollector()
	runSubscriber(t, newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), Group: "read-model", Decoder: orderV2(), Handler: col2.handle}))
	got, err := col2.waitFor(testContext(t, 10*time.Second), 2)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Version != 2 || got[1].Version != 3 || got[0].SchemaVersion != 2 {
		t.Errorf("the restart handled versions %d and %d (schema %d), want 2 and 3", got[0].Version, got[1].Version, got[0].SchemaVersion)
	}
}

// With SkipUndecodable, undecodable records are logged one by one and
// skipped, and consumption goes on.
func TestSubscriberWithSkipUndecodableLogsAndGoesOn(t *testing.T) {
	c := startCluster(t, "orders")
	hist := writeOrders(t, 1, 2)
	evs := hist["order-0"]
	events := topics.For("orders").Events
	part := topics.NewOwner().Of([]byte("order-0"), partitions)
	bad := func(v string) *kgo.Record {
		return &kgo.Record{Topic: events, Partition: part, Key: topics.EventKey("order-0", 99), Value: []byte(v)}
	}
	alien := evs[1]
	alien.Type = "ballot.VoteCast"
	produce(t, c,
		eventRecord(t, "orders", evs[0]), bad("not json"),
		eventRecord(t, "orders", evs[1]), eventRecord(t, "orders", alien),
		eventRecord(t, "orders", evs[2]), bad(`{"specversion":"1.0"}`))

	var mu sync.Mutex
	var bads []*client.RecordError
	var logs syncbuf.Buffer
	col := newCollector()
	s := newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), FromBeginning: true, Handler: col.handle, SkipUndecodable: true,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OnError: func(_ context.Context, err *client.RecordError) {
			mu.Lock()
			bads = append(bads, err)
			mu.Unlock()
		}})
	runSubscriber(t, s)
	got, err := col.waitFor(testContext(t, 10*time.Second), 3)
	if err != nil {
		t.Fatal(err)
	}
	checkInOrder(t, got, hist)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(bads)
		mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bads) != 3 {
		t.Fatalf("OnError got %d records, want 3: %v", len(bads), bads)
	}
	for i, want := range []int64{1, 3, 5} {
		if bads[i].Offset != want || bads[i].Partition != part || bads[i].Topic != events {
			t.Errorf("bad record %d at %s/%d@%d, want offset %d", i, bads[i].Topic, bads[i].Partition, bads[i].Offset, want)
		}
	}
	if !errors.Is(bads[0], aggregates.ErrMalformed) || !errors.Is(bads[1], aggregates.ErrUnknownEventType) {
		t.Errorf("errors %v and %v should match ErrMalformed and ErrUnknownEventType", bads[0], bads[1])
	}
	if bads[1].EventType != "ballot.VoteCast" || bads[0].EventType != "" {
		t.Errorf("event types %q and %q, want \"\" (unreadable) and ballot.VoteCast", bads[0].EventType, bads[1].EventType)
	}
	for _, off := range []string{"offset=1", "offset=3", "offset=5"} {
		if n := strings.Count(logs.String(), off); n != 1 || !strings.Contains(logs.String(), "level=WARN") {
			t.Errorf("the log has %d warnings at %s, want 1:\n%s", n, off, logs.String())
		}
	}
}

func TestSubscriberWithoutGroupReadsOnlyTheChosenAggregates(t *testing.T) {
	c := startCluster(t, "orders")
	hist := writeOrders(t, 12, 2)
	produce(t, c, recordsOf(t, "orders", hist)...)
	want := map[string][]aggregates.Event{"order-3": hist["order-3"], "order-8": hist["order-8"]}

	col := newCollector()
	s := newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), FromBeginning: true, AggregateIDs: []string{"order-3", "order-8"}, Handler: col.handle})
	stop := runSubscriber(t, s)
	if _, err := col.waitFor(testContext(t, 10*time.Second), 6); err != nil {
		t.Fatal(err)
	}
	// Events written later reach a running subscriber too.
	more := orderHistory(t, "order-3", 3)[3:]
	produce(t, c, eventRecord(t, "orders", more[0]), eventRecord(t, "orders", hist["order-4"][0]))
	want["order-3"] = append(want["order-3"], more...)
	if _, err := col.waitFor(testContext(t, 10*time.Second), 7); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // room for an unwanted extra event
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkInOrder(t, col.snapshot(), want)
}

func TestSubscriberFromTheEndSkipsOlderEvents(t *testing.T) {
	c := startCluster(t, "orders")
	old := orderHistory(t, "old", 0)
	produce(t, c, eventRecord(t, "orders", old[0]))
	col := newCollector()
	s := newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), Handler: col.handle})
	runSubscriber(t, s)
	// The start position is taken when partitions are first fetched;
	// write until the new event shows up.
	fresh := orderHistory(t, "fresh", 0)
	ctx := testContext(t, 10*time.Second)
	for {
		produce(t, c, eventRecord(t, "orders", fresh[0]))
		wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		got, err := col.waitFor(wctx, 1)
		cancel()
		if err == nil {
			if got[0].Subject != "fresh" {
				t.Fatalf("first event is of %q, want fresh", got[0].Subject)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatal("no event reached the subscriber")
		}
	}
}

func TestSubscriberSkipsEventsOfAbortedTransactions(t *testing.T) {
	c := startCluster(t, "orders")
	a, b := orderHistory(t, "aborted", 0), orderHistory(t, "committed", 0)
	produceTxn(t, c, "p1", false, eventRecord(t, "orders", a[0]))
	produceTxn(t, c, "p1", true, eventRecord(t, "orders", b[0]))
	col := newCollector()
	runSubscriber(t, newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), FromBeginning: true, Handler: col.handle}))
	got, err := col.waitFor(testContext(t, 10*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got = col.snapshot(); len(got) != 1 || got[0].Subject != "committed" {
		t.Errorf("handled %v, want only the committed event", got)
	}
}

// A failing handler stops Run with its error; the event is not committed,
// so the next run of the group starts with it.
func TestSubscriberStopsOnAHandlerErrorAndResumesThere(t *testing.T) {
	c := startCluster(t, "orders")
	hist := writeOrders(t, 1, 5)
	produce(t, c, recordsOf(t, "orders", hist)...)
	boom := errors.New("projection database is down")
	var seen []int64
	s := newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), Group: "g", FromBeginning: true,
		Handler: func(_ context.Context, e aggregates.Event) error {
			if e.Version == 3 {
				return boom
			}
			seen = append(seen, e.Version)
			return nil
		}})
	err := s.Run(testContext(t, 10*time.Second))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "offset 3") {
		t.Fatalf("Run = %v, want the handler's error at offset 3", err)
	}
	if fmt.Sprint(seen) != "[0 1 2]" {
		t.Errorf("handled versions %v before the failure, want [0 1 2]", seen)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("a second Run should fail")
	}

	col := newCollector()
	runSubscriber(t, newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), Group: "g", Handler: col.handle}))
	got, err := col.waitFor(testContext(t, 10*time.Second), 3)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Version != 3 || got[2].Version != 5 {
		t.Errorf("the restarted group handled versions %d..%d, want 3..5", got[0].Version, got[len(got)-1].Version)
	}
}

func TestSubscriberTurnsAHandlerPanicIntoAnError(t *testing.T) {
	c := startCluster(t, "orders")
	produce(t, c, eventRecord(t, "orders", orderHistory(t, "p", 0)[0]))
	s := newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), FromBeginning: true,
		Handler: func(context.Context, aggregates.Event) error { panic("bug") }})
	if err := s.Run(testContext(t, 10*time.Second)); err == nil || !strings.Contains(err.Error(), "panicked: bug") {
		t.Fatalf("Run = %v, want the panic as an error", err)
	}
}

func TestSubscriberRunReturnsSoonAfterItsContextEnds(t *testing.T) {
	c := startCluster(t, "orders")
	for _, group := range []string{"", "g"} {
		s := newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), Group: group, Handler: newCollector().handle})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		err := s.Run(ctx)
		cancel()
		if err != nil {
			t.Errorf("group %q: Run = %v, want nil after the context ended", group, err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("group %q: Run took %v", group, took)
		}
	}
}

func TestSubscriberConfigProblems(t *testing.T) {
	tests := []struct {
		name string
		cfg  client.SubscriberConfig
		want []string
	}{
		{"an empty config names every missing part", client.SubscriberConfig{}, []string{"Kafka.Brokers", "Prefixes", "Decoder", "Handler"}},
		{"empty ids are refused", client.SubscriberConfig{Kafka: client.Kafka{Brokers: []string{"x:1"}}, Prefixes: []string{"orders"}, Decoder: order.Definition(),
			Handler: newCollector().handle, AggregateIDs: []string{""}}, []string{"empty aggregate id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.NewSubscriber(tt.cfg)
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("NewSubscriber = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestSubscriberExplainsAMissingTopic(t *testing.T) {
	c := startCluster(t)
	s := newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), Handler: newCollector().handle})
	if err := s.Run(testContext(t, 5*time.Second)); !errors.Is(err, client.ErrTopicMissing) || !strings.Contains(err.Error(), "orders.events") {
		t.Fatalf("Run = %v, want ErrTopicMissing naming orders.events", err)
	}
}

// A member kicked out of its group (an expired session, a rebalance held
// back too long) rejoins and goes on; Run does not stop on it.
func TestSubscriberGoesOnAfterLosingItsGroupSession(t *testing.T) {
	c := startCluster(t, "orders")
	first := writeOrders(t, 5, 2)
	produce(t, c, recordsOf(t, "orders", first)...)
	col := newCollector()
	var logs syncbuf.Buffer
	s := newSubscriber(t, client.SubscriberConfig{Kafka: kafkatest.Kafka(c), Group: "kicked", FromBeginning: true,
		Handler: col.handle, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	stop := runSubscriber(t, s)
	if _, err := col.waitFor(testContext(t, 10*time.Second), 15); err != nil {
		t.Fatal(err)
	}
	kicked := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Heartbeat), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		resp := kreq.(*kmsg.HeartbeatRequest).ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.UnknownMemberID.Code
		once.Do(func() { close(kicked) })
		return resp, nil, true
	})
	select {
	case <-kicked:
	case <-testContext(t, 20*time.Second).Done():
		t.Fatal("no heartbeat within 20s")
	}
	for i := range 3 {
		for _, e := range orderHistory(t, fmt.Sprintf("late-%d", i), 1) {
			produce(t, c, eventRecord(t, "orders", e))
		}
	}
	deadline := testContext(t, 30*time.Second)
	for {
		n := 0
		for _, e := range col.snapshot() {
			if strings.HasPrefix(e.Subject, "late-") {
				n++
			}
		}
		if n >= 6 {
			break
		}
		select {
		case <-col.notify:
		case <-time.After(100 * time.Millisecond):
		case <-deadline.Done():
			t.Fatalf("the events written after the member was kicked were not handled (%d of 6); log:\n%s", n, logs.String())
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if !strings.Contains(logs.String(), "lost its consumer group session") {
		t.Errorf("no warning says the session was lost:\n%s", logs.String())
	}
}
