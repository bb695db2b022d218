package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/topics"
)

// counter is a test-only aggregate: small, with an invariant and a command
// that panics, so processor tests do not depend on a domain package.
type counterState struct {
	Exists bool  `json:"exists"`
	Value  int64 `json:"value"`
}

type (
	createCounter struct{}
	addCounter    struct {
		N   int64  `json:"n"`
		Agg string `json:"agg,omitempty"` // lets the test hook see which aggregate
	}
	boomCounter   struct{}
	poisonCounter struct{}
	counterPoison struct {
		F float64 `json:"f"`
	}
	counterCreated struct{}
	counterAdded   struct {
		N int64 `json:"n"`
	}
)

func counterKind() *aggregates.Definition[counterState] { return counterKindHooked(nil) }

// counterKindSchema is counterKind with another state schema version.
func counterKindSchema(v int) *aggregates.Definition[counterState] {
	return counterKindWith(nil, aggregates.StateSchema[counterState](v))
}

// counterKindHooked calls hook(aggregate) inside the Add handler.
func counterKindHooked(hook func(agg string)) *aggregates.Definition[counterState] {
	return counterKindWith(hook)
}

func counterKindWith(hook func(agg string), extra ...aggregates.Option[counterState]) *aggregates.Definition[counterState] {
	return aggregates.MustDefine("counter", append([]aggregates.Option[counterState]{
		aggregates.When("Created", func(s *counterState, _ counterCreated) { s.Exists = true }),
		aggregates.When("Added", func(s *counterState, e counterAdded) { s.Value += e.N }),
		aggregates.Handle("Create", func(s counterState, _ createCounter) ([]any, error) {
			if s.Exists {
				return nil, aggregates.Reject("already_exists", "counter exists")
			}
			return []any{counterCreated{}}, nil
		}),
		aggregates.Handle("Add", func(s counterState, c addCounter) ([]any, error) {
			if !s.Exists {
				return nil, aggregates.Reject("not_found", "no such counter")
			}
			if c.N == 0 {
				return nil, aggregates.Reject("zero", "adding zero")
			}
			if hook != nil {
				hook(c.Agg)
			}
			return []any{counterAdded{N: c.N}}, nil
		}),
		aggregates.Handle("Boom", func(counterState, boomCounter) ([]any, error) { panic("boom") }),
		// Poison records an event encoding/json refuses (NaN).
		aggregates.When("Poisoned", func(*counterState, counterPoison) {}),
		aggregates.Handle("Poison", func(counterState, poisonCounter) ([]any, error) { return []any{counterPoison{F: math.NaN()}}, nil }),
		aggregates.Invariant(func(s *counterState) error {
			if s.Value > 1_000_000 {
				return fmt.Errorf("value %d above 1000000", s.Value)
			}
			return nil
		}),
	}, extra...)...)
}

// startCluster starts a kfake broker on a free 127.0.0.1 port.
func startCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100 * time.Millisecond)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CHRONICLE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// testConfig is a processor config with timeouts short enough for tests.
func testConfig(t testing.TB, c *kfake.Cluster, txnID string, bindings ...Binding) Config {
	return Config{
		Brokers:            c.ListenAddrs(),
		Group:              "test-group",
		TransactionalID:    txnID,
		Aggregates:         bindings,
		Partitions:         6,
		CommitEvery:        500,
		CommitInterval:     20 * time.Millisecond,
		SessionTimeout:     3 * time.Second,
		RebalanceTimeout:   3 * time.Second,
		TransactionTimeout: 3 * time.Second,
		ShutdownTimeout:    5 * time.Second,
		Logger:             testLogger(t),
	}
}

// running is a processor started by startProcessor.
type running struct {
	p               *Processor
	foreignExpected bool // the test writes to the events topic itself
	cancel          context.CancelFunc
	done            chan error
}

func startProcessor(t testing.TB, cfg Config) *running {
	t.Helper()
	r := launchProcessor(t, cfg)
	t.Cleanup(func() { r.stop(t) })
	return r
}

// launchProcessor starts a processor whose Run result the test reads from
// done itself; the test's end cancels it.
func launchProcessor(t testing.TB, cfg Config) *running {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(cancel)
	return r
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	if n := r.p.Stats().ForeignWrites; n != 0 && !r.foreignExpected {
		t.Errorf("%d commits found foreign events in their events partition; only this test's processors write there", n)
	}
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run returned %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("Run did not return within 30s of cancel")
	}
}

// kill stops the processor as a crash would: no transaction end.
func (r *running) kill(t testing.TB) {
	t.Helper()
	r.p.crashOnce.Do(func() { close(r.p.crash) })
	r.stop(t)
}

func newProducer(t testing.TB, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.AllowAutoTopicCreation()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newAdmin(t testing.TB, c *kfake.Cluster) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// createTopics creates the topics of prefix with n partitions.
func createTopics(t testing.TB, c *kfake.Cluster, prefix string, n int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := newProducer(t, c)
	if _, err := topics.Ensure(ctx, cl, topics.For(prefix), topics.Spec{Partitions: n, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
}

// command builds a command record for the counter kind.
func command(t testing.TB, kind aggregates.Kind, topic, id string, payload any, expected *int64) *kgo.Record {
	t.Helper()
	cmd, err := kind.NewCommand(id, payload, aggregates.Metadata{Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	cmd.ExpectedVersion = expected
	v, err := cmd.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(id), Value: v}
}

func produceAll(t testing.TB, cl *kgo.Client, recs []*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
}

// readAll reads every committed record of topic (read_committed) up to its
// current stable end.
func readAll(t testing.TB, c *kfake.Cluster, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := newAdmin(t, c)
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	offsets := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			offsets[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: still waiting for partitions %v", topic, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if r.Offset == end-1 {
				delete(want, r.Partition)
			}
		})
	}
	return out
}

// waitResults consumes the results topic until it holds n results or the
// timeout passes, and returns them by command id; two results for one
// command id are an error.
func waitResults(t testing.TB, c *kfake.Cluster, topic string, n int, timeout time.Duration) map[string]aggregates.Result {
	return waitResultsLatest(t, c, topic, n, timeout, true)
}

// waitResultsLatest is waitResults keeping the latest result per id, where
// resending a command id on purpose yields a second (duplicate) result.
func waitResultsLatest(t testing.TB, c *kfake.Cluster, topic string, n int, timeout time.Duration, unique bool) map[string]aggregates.Result {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		recs := readAll(t, c, topic)
		if len(recs) >= n || time.Now().After(deadline) {
			out := map[string]aggregates.Result{}
			for _, r := range recs {
				var res aggregates.Result
				if err := json.Unmarshal(r.Value, &res); err != nil {
					t.Fatalf("result %s: %v", r.Key, err)
				}
				if _, dup := out[res.CommandID]; dup && unique {
					t.Errorf("command %s has two results", res.CommandID)
				}
				out[res.CommandID] = res
			}
			if len(recs) < n {
				t.Fatalf("only %d of %d results after %v", len(recs), n, timeout)
			}
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eventsByAggregate reads the events topic and checks, per aggregate, that
// versions are 0..n in order with no gap or duplicate, all in the owner
// partition, with keys id@version.
func eventsByAggregate(t testing.TB, c *kfake.Cluster, kind aggregates.Kind, topic string, partitions int32) map[string][]aggregates.Event {
	t.Helper()
	owner := topics.NewOwner()
	out := map[string][]aggregates.Event{}
	for _, r := range readAll(t, c, topic) {
		e, err := kind.DecodeEvent(r.Value)
		if err != nil {
			t.Fatalf("event at %d/%d: %v", r.Partition, r.Offset, err)
		}
		if want := owner.Of([]byte(e.Subject), partitions); r.Partition != want {
			t.Errorf("event %s of %q in partition %d, owner is %d", e.Type, e.Subject, r.Partition, want)
		}
		if string(r.Key) != string(topics.EventKey(e.Subject, e.Version)) {
			t.Errorf("event key %q, want %q", r.Key, topics.EventKey(e.Subject, e.Version))
		}
		out[e.Subject] = append(out[e.Subject], e)
	}
	for id, es := range out {
		for i, e := range es {
			if e.Version != int64(i) {
				t.Fatalf("aggregate %q: event %d has version %d (gap or duplicate)", id, i, e.Version)
			}
		}
	}
	return out
}

// syncMap is a tiny typed concurrent map for test bookkeeping.
type syncMap[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]V
}

func (s *syncMap[K, V]) set(k K, v V) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[K]V{}
	}
	s.m[k] = v
}
