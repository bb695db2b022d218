package processor

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/internal/syncbuf"
	"github.com/chronicle-es/chronicle/topics"
)

// decider sends commands one at a time and returns each one's result, so a
// test can say what every single decision must be.
type decider struct {
	t      *testing.T
	e      *snapEnv
	sent   int
	resent bool // a command id was sent twice on purpose: it has two results
}

func (d *decider) send(rec *kgo.Record) aggregates.Result {
	d.t.Helper()
	produceAll(d.t, d.e.prod, []*kgo.Record{rec})
	d.sent++
	cmd := mustDecode(d.t, rec.Value)
	res := waitResultsLatest(d.t, d.e.c, d.e.names.Results, d.sent, 60*time.Second, !d.resent)
	r, ok := res[cmd.ID.String()]
	if !ok {
		d.t.Fatalf("no result for command %s", cmd.ID)
	}
	return r
}

// want sends rec and fails unless its result has status and version.
func (d *decider) want(rec *kgo.Record, status aggregates.ResultStatus, version int64) {
	d.t.Helper()
	r := d.send(rec)
	if r.Status != status || r.Version != version {
		d.t.Fatalf("%s on %s: %s at version %d (%s %s), want %s at version %d", r.CommandType, r.AggregateID, r.Status, r.Version, r.Code, r.Reason, status, version)
	}
}

func (e *snapEnv) redisClient(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: e.redis.Addr, Password: e.redis.Password()})
	t.Cleanup(func() { c.Close() })
	return c
}

// Issue 8, scenario 1: a checkpoint handed to a writer that cannot write
// (Redis at maxmemory under noeviction: writes fail, reads work), then
// eviction. The evicted aggregate's stored snapshot is one version behind;
// deciding on it would accept version 1 a second time.
func TestEvictionWaitsForTheStoreToAcknowledge(t *testing.T) {
	e := newSnapEnv(t, 1)
	cfg := e.config(t, "evict-oom")
	cfg.CacheSize = 3
	cfg.CheckpointEvents = 1
	cfg.CommitEvery = 1
	r := startProcessor(t, cfg)
	d := &decider{t: t, e: e}
	ctx := context.Background()
	rc := e.redisClient(t)

	d.want(command(t, e.kind, e.names.Commands, "c-0", createCounter{}, nil), aggregates.StatusAccepted, 0)
	waitStat(t, "checkpoints", func() int64 { return r.p.Stats().Checkpoints }, 1)
	if err := rc.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	d.want(command(t, e.kind, e.names.Commands, "c-0", addCounter{N: 1}, nil), aggregates.StatusAccepted, 1)
	for i := 1; i <= 5; i++ {
		d.want(command(t, e.kind, e.names.Commands, fmt.Sprintf("c-%d", i), createCounter{}, nil), aggregates.StatusAccepted, 0)
	}
	d.want(command(t, e.kind, e.names.Commands, "c-0", addCounter{N: 1}, nil), aggregates.StatusAccepted, 2)
	if err := rc.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// Once Redis takes writes again the cache shrinks back to its size and
	// c-0 comes back from its snapshot at version 2.
	for i := 1; i <= 5; i++ {
		d.want(command(t, e.kind, e.names.Commands, fmt.Sprintf("c-%d", i), addCounter{N: 1}, nil), aggregates.StatusAccepted, 1)
	}
	// c-0 is now the least recently used of six aggregates in a cache of
	// three: evicted once its snapshot at version 2 is stored.
	waitStat(t, "evictions", func() int64 { return r.p.Stats().Evictions }, 3)
	loads := r.p.Stats().SnapshotLoads
	d.want(command(t, e.kind, e.names.Commands, "c-0", addCounter{N: 1}, nil), aggregates.StatusAccepted, 3)
	if st := r.p.Stats(); st.SnapshotLoads == loads {
		t.Errorf("c-0 did not come back from the store, the test proves nothing: %+v", st)
	}
	eventsByAggregate(t, e.c, e.kind, e.names.Events, 1)
}

// Issue 8, scenario 2: Redis flushed before the partition's first
// checkpoint was stored. An evicted aggregate is then in neither memory nor
// Redis; taking it for new would accept its creation a second time.
func TestFlushBeforeTheFirstCheckpointIsDetected(t *testing.T) {
	e := newSnapEnv(t, 1)
	cfg := e.config(t, "flush-first")
	cfg.CacheSize = 3
	cfg.CommitEvery = 1
	cfg.CheckpointEvents = 1_000_000
	cfg.CheckpointInterval = time.Hour
	r := startProcessor(t, cfg)
	d := &decider{t: t, e: e}
	for i := range 10 {
		d.want(command(t, e.kind, e.names.Commands, fmt.Sprintf("c-%d", i), createCounter{}, nil), aggregates.StatusAccepted, 0)
	}
	waitStat(t, "evictions", func() int64 { return r.p.Stats().Evictions }, 1)
	e.redis.FlushAll()
	for i := range 10 {
		r := d.send(command(t, e.kind, e.names.Commands, fmt.Sprintf("c-%d", i), createCounter{}, nil))
		if r.Status != aggregates.StatusRejected || r.Code != "already_exists" {
			t.Fatalf("creating c-%d again after the flush: %s %s at version %d, want rejected already_exists", i, r.Status, r.Code, r.Version)
		}
	}
	eventsByAggregate(t, e.c, e.kind, e.names.Events, 1)
}

// idsByPartition returns, for each of n partitions, a counter id it owns.
func idsByPartition(n int32) []string {
	owner := topics.NewOwner()
	out := make([]string, n)
	for i, found := 0, int32(0); found < n; i++ {
		id := fmt.Sprintf("c-%d", i)
		if p := owner.Of([]byte(id), n); out[p] == "" {
			out[p] = id
			found++
		}
	}
	return out
}

// Issue 8, scenario 3: an event the running code cannot decode (a newer
// schema version, written by a newer instance in a rolling deploy). Skipping
// it would leave the aggregate a version short and the next command would
// reuse that version; the partition must stop instead, alone.
func TestUndecodableEventStopsItsPartitionOnly(t *testing.T) {
	e := newSnapEnv(t, 2)
	ids := idsByPartition(2)
	stuck, fine := ids[0], ids[1]
	// History written by a newer instance: stuck has version 0 that this
	// code reads and version 1 of a schema it does not know.
	newer := e.kind.New(stuck)
	created, err := newer.Execute(mustCommand(t, e.kind, stuck, createCounter{}), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v0, err := created[0].Encode()
	if err != nil {
		t.Fatal(err)
	}
	added, err := newer.Execute(mustCommand(t, e.kind, stuck, addCounter{N: 5}), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	added[0].SchemaVersion = 2 // this code only reads schema version 1
	v1, err := added[0].Encode()
	if err != nil {
		t.Fatal(err)
	}
	manual := newProducer(t, e.c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceAll(t, manual, []*kgo.Record{
		{Topic: e.names.Events, Partition: 0, Key: topics.EventKey(stuck, 0), Value: v0},
		{Topic: e.names.Events, Partition: 0, Key: topics.EventKey(stuck, 1), Value: v1},
	})
	var logs syncBuffer
	cfg := e.config(t, "undecodable")
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	r := startProcessor(t, cfg)
	waitStat(t, "stopped partitions", func() int64 { return r.p.Stats().Stopped }, 1)
	d := &decider{t: t, e: e}
	d.want(command(t, e.kind, e.names.Commands, fine, createCounter{}, nil), aggregates.StatusAccepted, 0)
	produceAll(t, e.prod, []*kgo.Record{command(t, e.kind, e.names.Commands, stuck, addCounter{N: 1}, nil)})
	time.Sleep(time.Second)
	if res := readAll(t, e.c, e.names.Results); len(res) != 1 {
		t.Fatalf("%d results; the stopped partition must decide nothing, want only %s's", len(res), fine)
	}
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "offset=1") || !strings.Contains(out, "schema_version=2") || !strings.Contains(out, "counter.Added") {
		t.Errorf("no ERROR log naming the offset, type and schema version:\n%s", out)
	}
	if got := r.p.Assigned()[e.names.Commands]; len(got) != 1 {
		t.Errorf("restored partitions %v, want only the healthy one", got)
	}
	if ready, reasons := r.p.Readiness(); ready || len(reasons) != 1 || !strings.Contains(reasons[0], "stopped") || !strings.Contains(reasons[0], "offset 1") {
		t.Errorf("Readiness = %v %q, want not ready because the partition stopped at offset 1", ready, reasons)
	}
}

// mustCommand builds a command for the counter kind.
func mustCommand(t *testing.T, kind aggregates.Kind, id string, payload any) *aggregates.Command {
	t.Helper()
	cmd, err := kind.NewCommand(id, payload, aggregates.Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	return &cmd
}

// syncBuffer collects output written concurrently.
type syncBuffer = syncbuf.Buffer

// Issue 8, "poison is contained to its command": a command whose event
// cannot be encoded is rejected alone, with a DLQ record; the commands
// around it, on the same aggregate too, commit in the same transaction.
func TestUnencodableEventIsRejectedAlone(t *testing.T) {
	e := newSnapEnv(t, 1)
	cfg := e.config(t, "poison")
	cfg.CommitInterval = 500 * time.Millisecond // one transaction for all
	r := startProcessor(t, cfg)
	recs := []*kgo.Record{
		command(t, e.kind, e.names.Commands, "c-0", createCounter{}, nil),
		command(t, e.kind, e.names.Commands, "c-0", poisonCounter{}, nil),
		command(t, e.kind, e.names.Commands, "c-0", addCounter{N: 2}, nil),
		command(t, e.kind, e.names.Commands, "c-1", createCounter{}, nil),
	}
	produceAll(t, e.prod, recs)
	res := waitResults(t, e.c, e.names.Results, len(recs), 30*time.Second)
	want := []struct {
		status  aggregates.ResultStatus
		code    string
		version int64
	}{{aggregates.StatusAccepted, "", 0}, {aggregates.StatusRejected, aggregates.CodeUnencodable, 0}, {aggregates.StatusAccepted, "", 1}, {aggregates.StatusAccepted, "", 0}}
	for i, rec := range recs {
		got := res[mustDecode(t, rec.Value).ID.String()]
		if got.Status != want[i].status || got.Code != want[i].code || got.Version != want[i].version {
			t.Errorf("command %d: %s %s at version %d (%s), want %s %s at version %d", i, got.Status, got.Code, got.Version, got.Reason, want[i].status, want[i].code, want[i].version)
		}
	}
	if dlq := readAll(t, e.c, e.names.DLQ); len(dlq) != 1 {
		t.Errorf("%d DLQ records, want the poison command's", len(dlq))
	}
	if st := r.p.Stats(); st.TxnsAborted != 0 {
		t.Errorf("%d transactions aborted; the poison command must not abort the others", st.TxnsAborted)
	}
	if evs := eventsByAggregate(t, e.c, e.kind, e.names.Events, 1); len(evs["c-0"]) != 2 {
		t.Errorf("c-0 has %d events, want 2", len(evs["c-0"]))
	}
}

// Issue 8: a processor that finds events in its events partition that it
// did not write stops that partition, logs an ERROR and restores it, so it
// decides on them too.
func TestForeignEventsAreDetectedAndRestored(t *testing.T) {
	e := newSnapEnv(t, 1)
	var logs syncBuffer
	cfg := e.config(t, "foreign")
	cfg.CommitEvery = 1
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	r := startProcessor(t, cfg)
	r.foreignExpected = true
	d := &decider{t: t, e: e}
	d.want(command(t, e.kind, e.names.Commands, "c-0", createCounter{}, nil), aggregates.StatusAccepted, 0)
	// Someone else appends c-0's version 1 (e.g. a second consumer group).
	other := e.kind.New("c-0")
	for _, c := range []any{createCounter{}, addCounter{N: 40}} {
		evs, err := other.Execute(mustCommand(t, e.kind, "c-0", c), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if evs[0].Version == 1 {
			v, _ := evs[0].Encode()
			produceAll(t, newProducer(t, e.c, kgo.RecordPartitioner(kgo.ManualPartitioner())), []*kgo.Record{{Topic: e.names.Events, Partition: 0, Key: topics.EventKey("c-0", 1), Value: v}})
		}
	}
	// The next commit lands past the foreign event: detected, restored.
	d.want(command(t, e.kind, e.names.Commands, "c-1", createCounter{}, nil), aggregates.StatusAccepted, 0)
	waitStat(t, "foreign writes", func() int64 { return r.p.Stats().ForeignWrites }, 1)
	waitStat(t, "restores", func() int64 { return r.p.Stats().Restores }, 2)
	// After the restore c-0 includes the foreign version 1.
	d.want(command(t, e.kind, e.names.Commands, "c-0", addCounter{N: 2}, nil), aggregates.StatusAccepted, 2)
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "foreign events") {
		t.Errorf("no ERROR log about the foreign events:\n%s", out)
	}
}
