package drift_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/drift"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/internal/redistest"
	"github.com/chronicle-es/chronicle/processor"
	"github.com/chronicle-es/chronicle/snapshots"
	"github.com/chronicle-es/chronicle/topics"
)

// A counter whose Added apply function is given, so a test can build the
// same aggregate type with a changed apply function and the same state
// schema: the mistake Verify exists to catch.
type (
	counterState struct {
		Exists bool  `json:"exists"`
		Value  int64 `json:"value"`
	}
	create  struct{}
	add     struct{ N int64 }
	created struct{}
	added   struct{ N int64 }
)

func counterKind(apply func(*counterState, added), opts ...aggregates.Option[counterState]) *aggregates.Definition[counterState] {
	return aggregates.MustDefine("counter", append([]aggregates.Option[counterState]{
		aggregates.When("Created", func(s *counterState, _ created) { s.Exists = true }),
		aggregates.When("Added", apply),
		aggregates.Handle("Create", func(s counterState, _ create) ([]any, error) {
			if s.Exists {
				return nil, aggregates.Reject("already_exists", "counter exists")
			}
			return []any{created{}}, nil
		}),
		aggregates.Handle("Add", func(s counterState, c add) ([]any, error) {
			if !s.Exists {
				return nil, aggregates.Reject("not_found", "no such counter")
			}
			return []any{added(c)}, nil
		}),
	}, opts...)...)
}

func adds(s *counterState, e added) { s.Value += e.N }

// addsWithFee is adds changed by a later release: every addition costs 1.
func addsWithFee(s *counterState, e added) { s.Value += e.N - 1 }

const prefix = "counters"

// env is a kfake broker and a real redis-server with the snapshots a
// processor wrote for counters c-0..c-(n-1).
type env struct {
	c     *kfake.Cluster
	redis *redistest.Server
	store *snapshots.Redis
	kafka client.Kafka
	sums  map[string]int64
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newEnv runs a processor with snapshots over n counters, each created and
// added to a few times, and stops it (which checkpoints every partition).
func newEnv(t *testing.T, n int) *env {
	t.Helper()
	c := kafkatest.Start(t)
	srv := redistest.Start(t)
	store, err := snapshots.Open(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &env{c: c, redis: srv, store: store, kafka: client.Kafka{Brokers: c.ListenAddrs()}, sums: map[string]int64{}}

	kind := counterKind(adds)
	p, err := processor.New(processor.Config{
		Brokers: c.ListenAddrs(), Group: "verify-test", TransactionalID: "verify-test-1",
		Aggregates: []processor.Binding{{Kind: kind, Prefix: prefix}}, Partitions: 3,
		CommitInterval: 20 * time.Millisecond, SessionTimeout: 3 * time.Second, RebalanceTimeout: 3 * time.Second,
		TransactionTimeout: 3 * time.Second, ShutdownTimeout: 5 * time.Second,
		Snapshots: store, CheckpointInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stop := func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("processor Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the processor did not stop within 30s")
		}
	}
	defer stop()
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("processor Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the processor was not ready within 30s")
	}

	prod, err := client.NewProducer(client.ProducerConfig{Kafka: e.kafka})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var cmds []aggregates.Command
	for i := range n {
		id := fmt.Sprintf("c-%d", i)
		cmds = append(cmds, command(t, kind, id, create{}))
		for j := range i%3 + 1 {
			cmds = append(cmds, command(t, kind, id, add{N: int64(10 + j)}))
			e.sums[id] += int64(10 + j)
		}
	}
	results, err := prod.SendAll(testContext(t, 30*time.Second), prefix, cmds)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if r.Status != aggregates.StatusAccepted {
			t.Fatalf("command %d (%s of %s): %+v", i, cmds[i].Type, cmds[i].AggregateID, r)
		}
	}
	return e
}

func command(t testing.TB, kind aggregates.Kind, id string, payload any) aggregates.Command {
	t.Helper()
	cmd, err := kind.NewCommand(id, payload, aggregates.Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

func (e *env) config(kind aggregates.Kind) drift.Config {
	return drift.Config{Kind: kind, Prefix: prefix, Kafka: e.kafka, Store: e.store, All: true}
}

func (e *env) verify(t *testing.T, cfg drift.Config) drift.Report {
	t.Helper()
	rep, err := drift.Verify(testContext(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// snapshot returns the stored snapshot of id.
func (e *env) snapshot(t *testing.T, id string) (int32, snapshots.Snapshot) {
	t.Helper()
	p := topics.NewOwner().Of([]byte(id), 3)
	s, ok, err := e.store.Load(testContext(t, 5*time.Second), "counter", p, id)
	if err != nil || !ok {
		t.Fatalf("snapshot of %s: %v, found %v", id, err, ok)
	}
	return p, s
}

// plant overwrites stored snapshots through the store's API.
func (e *env) plant(t *testing.T, p int32, snaps ...snapshots.Snapshot) {
	t.Helper()
	if err := e.store.Save(testContext(t, 5*time.Second), "counter", p, nil, snaps); err != nil {
		t.Fatal(err)
	}
}

func TestVerify(t *testing.T) {
	const n = 12
	e := newEnv(t, n)

	t.Run("a healthy store has no findings", func(t *testing.T) {
		rep := e.verify(t, e.config(counterKind(adds)))
		if !rep.OK() || rep.Aggregates != n || rep.Compared != n || rep.NoSnapshot != 0 {
			t.Fatalf("report %+v, want %d aggregates compared and no findings", rep, n)
		}
	})

	t.Run("an apply function changed without a StateSchema bump is drift in every snapshot it touches", func(t *testing.T) {
		rep := e.verify(t, e.config(counterKind(addsWithFee)))
		if rep.Compared != n || len(rep.Findings) != n {
			t.Fatalf("report %+v, want %d findings", rep, n)
		}
		for _, f := range rep.Findings {
			if f.Problem != drift.Drift {
				t.Errorf("finding %v, want drift", f)
				continue
			}
			_, s := e.snapshot(t, f.AggregateID)
			if f.SnapshotVersion != s.Version || f.ReplayVersion != s.Version {
				t.Errorf("%s: versions %d/%d, want the snapshot's %d", f.AggregateID, f.SnapshotVersion, f.ReplayVersion, s.Version)
			}
			fees := s.Version // one per Added event
			want := fmt.Sprintf("state.value: snapshot %d, replay %d", e.sums[f.AggregateID], e.sums[f.AggregateID]-fees)
			if len(f.Diff) != 1 || f.Diff[0] != want {
				t.Errorf("%s: diff %q, want %q", f.AggregateID, f.Diff, want)
			}
			if w := fmt.Sprintf("drift: aggregate %q (partition %d): snapshot at version %d (offset %d) differs from the replay at version %d\n    %s", f.AggregateID, f.Partition, s.Version, s.Offset, s.Version, want); f.String() != w {
				t.Errorf("finding reads\n%s\nwant\n%s", f, w)
			}
		}
	})

	t.Run("snapshots of another StateSchema are reported and not compared", func(t *testing.T) {
		rep := e.verify(t, e.config(counterKind(adds, aggregates.StateSchema[counterState](2))))
		if rep.Compared != 0 || len(rep.Findings) != n {
			t.Fatalf("report %+v, want %d findings", rep, n)
		}
		for _, f := range rep.Findings {
			if f.Problem != drift.OtherSchema || !strings.Contains(f.Detail, `"counter/v1"`) {
				t.Errorf("finding %v, want other-state-schema naming counter/v1", f)
			}
		}
	})

	t.Run("a sample checks that many aggregates", func(t *testing.T) {
		cfg := e.config(counterKind(adds))
		cfg.All, cfg.Sample, cfg.Rand = false, 5, rand.New(rand.NewPCG(1, 2))
		if rep := e.verify(t, cfg); !rep.OK() || rep.Aggregates != 5 || rep.Compared != 5 {
			t.Fatalf("report %+v, want 5 aggregates compared", rep)
		}
		cfg.Sample = 100
		if rep := e.verify(t, cfg); !rep.OK() || rep.Aggregates != n {
			t.Fatalf("report %+v, want all %d aggregates", rep, n)
		}
	})

	t.Run("planted problems are found, each naming its aggregate", func(t *testing.T) {
		kind := counterKind(adds)
		// A state overwritten through the store: drift in c-4 alone.
		p4, s4 := e.snapshot(t, "c-4")
		a := kind.New("c-4")
		if err := a.UnmarshalSnapshot(s4.Data); err != nil {
			t.Fatal(err)
		}
		tampered := strings.Replace(string(s4.Data), fmt.Sprintf(`"value":%d`, a.State().Value), `"value":77`, 1)
		if tampered == string(s4.Data) {
			t.Fatalf("snapshot %s has no value field to tamper with", s4.Data)
		}
		s4.Data = []byte(tampered)
		e.plant(t, p4, s4)
		// c-5's snapshot cannot be decoded.
		p5, s5 := e.snapshot(t, "c-5")
		s5.Data = []byte(`{"id":"c-5","version":`)
		e.plant(t, p5, s5)
		// ghost has a snapshot and no events.
		pg := topics.NewOwner().Of([]byte("ghost"), 3)
		e.plant(t, pg, snapshots.Snapshot{AggregateID: "ghost", Version: 3, Offset: 0, Stamp: kind.StateStamp(), Data: []byte(`{"id":"ghost","version":3,"state":{"exists":true,"value":1}}`)})
		// c-6's snapshot is ahead of its last event.
		p6, s6 := e.snapshot(t, "c-6")
		s6.Version += 2
		s6.Data = []byte(strings.Replace(string(s6.Data), fmt.Sprintf(`"version":%d`, s6.Version-2), fmt.Sprintf(`"version":%d`, s6.Version), 1))
		e.plant(t, p6, s6)

		// c-7's stored value is not the store's format at all.
		opts, err := redis.ParseURL(e.redis.URL())
		if err != nil {
			t.Fatal(err)
		}
		rc := redis.NewClient(opts)
		defer rc.Close()
		key := fmt.Sprintf("%s{counter.%d}:s:c-7", snapshots.DefaultKeyPrefix, topics.NewOwner().Of([]byte("c-7"), 3))
		if n, err := rc.Exists(testContext(t, 5*time.Second), key).Result(); err != nil || n != 1 {
			t.Fatalf("the snapshot of c-7 is not at %s: %v", key, err)
		}
		if err := rc.Set(testContext(t, 5*time.Second), key, "garbage", 0).Err(); err != nil {
			t.Fatal(err)
		}

		rep := e.verify(t, drift.Config{Kind: kind, Prefix: prefix, Kafka: e.kafka, Store: e.store, IDs: []string{"c-1", "c-4", "c-5", "c-6", "c-7", "ghost", "nobody", "c-4"}})
		if rep.Aggregates != 7 || rep.Compared != 2 || len(rep.NotFound) != 1 || rep.NotFound[0] != "nobody" {
			t.Errorf("report %+v: want 7 aggregates, 2 compared (c-1, c-4), nobody not found", rep)
		}
		want := map[string]drift.Problem{"c-4": drift.Drift, "c-5": drift.Undecodable, "c-6": drift.BeyondLog, "c-7": drift.Undecodable, "ghost": drift.BeyondLog}
		if len(rep.Findings) != len(want) {
			t.Errorf("findings %v, want %v", rep.Findings, want)
		}
		for _, f := range rep.Findings {
			if want[f.AggregateID] != f.Problem {
				t.Errorf("finding %v, want %s for %s", f, want[f.AggregateID], f.AggregateID)
			}
			switch f.AggregateID {
			case "c-4":
				w := fmt.Sprintf("state.value: snapshot 77, replay %d", e.sums["c-4"])
				if len(f.Diff) != 1 || f.Diff[0] != w || f.SnapshotVersion != s4.Version || !strings.Contains(string(f.Snapshot), `"value":77`) {
					t.Errorf("c-4: %v, want the diff %q at version %d and both states", f, w, s4.Version)
				}
			case "c-6":
				if f.SnapshotVersion != s6.Version || f.ReplayVersion != s6.Version-2 {
					t.Errorf("c-6: %v, want snapshot version %d, replay %d", f, s6.Version, s6.Version-2)
				}
			case "c-7":
				if !strings.Contains(f.String(), `undecodable-snapshot: aggregate "c-7"`) || !strings.Contains(f.Detail, "corrupt") {
					t.Errorf("c-7: %v, want the store's corrupt error", f)
				}
			case "ghost":
				if f.ReplayVersion != -1 || !strings.Contains(f.Detail, "no event") {
					t.Errorf("ghost: %v, want a replay at -1 and no event", f)
				}
			}
		}
		// The whole topic finds the same, among the healthy rest.
		rep = e.verify(t, e.config(kind))
		if rep.Aggregates != n || rep.Compared != n-3 || len(rep.Findings) != 4 {
			t.Errorf("--all: report %+v, want %d aggregates, 4 findings (c-4, c-5, c-6, c-7)", rep, n)
		}
	})
}

func TestVerifyFindsAGapInTheHistory(t *testing.T) {
	e := newEnv(t, 1)
	kind := counterKind(adds)
	// gap's events v0..v2, of which v1 never reached the log.
	a := kind.New("gap")
	var evs []aggregates.Event
	for _, c := range []any{create{}, add{N: 1}, add{N: 2}} {
		cmd := command(t, kind, "gap", c)
		out, err := a.Execute(&cmd, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, out...)
	}
	p := topics.NewOwner().Of([]byte("gap"), 3)
	cl := kafkatest.Client(t, e.c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var last int64
	for _, ev := range []aggregates.Event{evs[0], evs[2]} {
		v, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		r, err := cl.ProduceSync(testContext(t, 5*time.Second), &kgo.Record{Topic: topics.For(prefix).Events, Partition: p, Key: topics.EventKey("gap", ev.Version), Value: v}).First()
		if err != nil {
			t.Fatal(err)
		}
		last = r.Offset
	}
	only := drift.Config{Kind: kind, Prefix: prefix, Kafka: e.kafka, Store: e.store, IDs: []string{"gap"}}
	if rep := e.verify(t, only); !rep.OK() || rep.Aggregates != 1 || rep.NoSnapshot != 1 || rep.Compared != 0 {
		t.Fatalf("before its snapshot: %+v, want one aggregate without a snapshot", rep)
	}
	data, err := a.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	e.plant(t, p, snapshots.Snapshot{AggregateID: "gap", Version: 2, Offset: last, Stamp: kind.StateStamp(), Data: data})

	rep := e.verify(t, only)
	if len(rep.Findings) != 1 || rep.Findings[0].Problem != drift.MissingEvents || rep.Findings[0].ReplayVersion != 0 || !strings.Contains(rep.Findings[0].Detail, "version 1 is missing") {
		t.Fatalf("report %+v, want missing-events naming version 1", rep)
	}
}

func TestConfigValidateNamesEveryProblem(t *testing.T) {
	err := drift.Config{IDs: []string{""}, Sample: -1, All: true}.Validate()
	for _, w := range []string{"Config.Kind", "Config.Prefix", "Kafka.Brokers", "Config.Store", "empty aggregate id", "sample size -1", "exactly one of"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate = %v, want it to mention %q", err, w)
		}
	}
	if _, err := drift.Verify(context.Background(), drift.Config{}); err == nil {
		t.Error("Verify accepted an empty config")
	}
}
