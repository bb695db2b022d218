package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"pgregory.net/rapid"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/internal/pgtest"
	"github.com/chronicle-es/chronicle/internal/syncbuf"
	"github.com/chronicle-es/chronicle/projection"
	"github.com/chronicle-es/chronicle/projection/postgres"
	"github.com/chronicle-es/chronicle/topics"
)

// The projection model: a rapid state machine that drives real projection
// instances (kfake on 127.0.0.1, one real PostgreSQL for the whole test, a
// fresh schema per rapid run) through produces (plain, transactional,
// aborted), runs until caught up, crashes at every point of a batch's
// commit, twins in one group and in two (a zombie), Rebuilds, undecodable
// events and the deploy of a decoder that reads them. After every action,
// with no instance running, check compares the read model with a pure replay
// of the committed events below the stored positions.
//
// A crash is the instance's context cancelled at the injected point, with
// the call there failing: the database loses the open transaction, as it
// does when the process dies. (The instance still leaves its consumer group;
// a member that vanishes without leaving is not modelled, since it only
// delays the rebalance by a session timeout.)

const (
	modelPartitions = 3
	modelName       = "model"
)

var modelEvents = topics.For("orders").Events

// errInjected is the error of every injected fault.
var errInjected = errors.New("injected fault")

// fault is a point where an instance crashes (its context is cancelled and
// the call fails, as a SIGKILL loses the transaction) or fails.
type fault int

const (
	noFault fault = iota
	// faultPositions: Store.Positions fails (at assignment, or on the reload
	// after a conflict); Run returns the error.
	faultPositions
	// faultBeforeBegin: crash in Store.Commit before the transaction begins.
	faultBeforeBegin
	// faultAfterMoves: crash inside the transaction, the positions moved,
	// before the first handler.
	faultAfterMoves
	// faultMidHandlers: crash while a handler runs.
	faultMidHandlers
	// faultHandlerError: a handler fails; Run returns its error.
	faultHandlerError
	// faultHandlerPanic: a handler panics; Run returns an error saying so.
	faultHandlerPanic
	// faultAfterHandlers: crash after the last handler, before the commit.
	faultAfterHandlers
	// faultBetween: crash between the two transactions of a broken store
	// (the real store has no such point, so nothing happens there).
	faultBetween
	// faultAfterCommit: crash after the commit, before Run's memory of the
	// positions advances.
	faultAfterCommit
	// faultLostAck: the commit lands but Commit reports a conflict (the
	// acknowledgement was lost); Run reloads and goes on.
	faultLostAck
	numFaults
)

func (f fault) String() string {
	return [...]string{"none", "positions-fail", "before-begin", "after-moves", "mid-handlers", "handler-error", "handler-panic",
		"after-handlers", "between-transactions", "after-commit", "lost-ack"}[f]
}

// fails reports whether an instance with this fault returns from Run by
// itself, with the fault's error, once it fires; the other faults cancel
// it (a crash) or let it go on.
func (f fault) fails() bool {
	return f == faultPositions || f == faultHandlerError || f == faultHandlerPanic
}

// plan is how one instance runs.
type plan struct {
	group string
	batch int
	fault fault
	at    int64         // the fault fires at this Positions, Commit or handler call (from 1)
	brief time.Duration // > 0: cancelled this long after it starts
}

func (p plan) String() string {
	s := fmt.Sprintf("group=%s batch=%d", p.group, p.batch)
	if p.fault != noFault {
		s += fmt.Sprintf(" fault=%v@%d", p.fault, p.at)
	}
	if p.brief > 0 {
		s += fmt.Sprintf(" brief=%v", p.brief)
	}
	return s
}

// instance is one running Projection.
type instance struct {
	plan      plan
	bar       *barrier
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	err       error // Run's result, once done is closed
	positions atomic.Int64
	commits   atomic.Int64
	handled   atomic.Int64
	firstDone atomic.Bool // its first Commit returned
	fired     atomic.Bool // the fault fired
	stopped   atomic.Bool // the model cancelled it
}

// hit reports whether the fault kind fires at call n, and when it does,
// crashes the instance unless the fault is one it returns by itself.
func (in *instance) hit(kind fault, n int64) bool {
	if in == nil || in.plan.fault != kind || in.plan.at != n || !in.fired.CompareAndSwap(false, true) {
		return false
	}
	if !kind.fails() && kind != faultLostAck {
		in.cancel()
	}
	return true
}

// barrier holds each instance's first Commit until every instance reached
// its own, so that twins read the same records before either commits; the
// run is not over before each of those commits returned.
type barrier struct {
	n       int32
	arrived atomic.Int32
	all     chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: int32(n), all: make(chan struct{})} }

func (b *barrier) arrive(ctx context.Context) {
	if b.arrived.Add(1) == b.n {
		close(b.all)
	}
	select {
	case <-b.all:
	case <-ctx.Done():
	case <-time.After(5 * time.Second): // a twin with nothing to commit: go on alone
	}
}

// betweenKey carries, in Commit's context, the hook a two-transaction
// (broken) store calls between its transactions.
type betweenKey struct{}

// faultStore injects one instance's faults around the store under test.
type faultStore struct {
	inner projection.Store[pgx.Tx]
	in    *instance // nil: no faults
	stats *modelStats
}

func (s *faultStore) Positions(ctx context.Context, name string) ([]projection.Position, error) {
	if s.in != nil && s.in.hit(faultPositions, s.in.positions.Add(1)) {
		return nil, fmt.Errorf("reading positions: %w", errInjected)
	}
	return s.inner.Positions(ctx, name)
}

func (s *faultStore) Commit(ctx context.Context, name string, moves []projection.Move, apply func(ctx context.Context, tx pgx.Tx) error) error {
	in := s.in
	if in == nil {
		return s.inner.Commit(ctx, name, moves, apply)
	}
	n := in.commits.Add(1)
	if n == 1 && in.bar != nil {
		in.bar.arrive(ctx)
		defer in.firstDone.Store(true)
	}
	if in.hit(faultBeforeBegin, n) {
		return errInjected
	}
	ctx = context.WithValue(ctx, betweenKey{}, func() error {
		if in.hit(faultBetween, n) {
			return errInjected
		}
		return nil
	})
	err := s.inner.Commit(ctx, name, moves, func(ctx context.Context, tx pgx.Tx) error {
		if in.hit(faultAfterMoves, n) {
			return errInjected
		}
		if err := apply(ctx, tx); err != nil {
			return err
		}
		if in.hit(faultAfterHandlers, n) {
			return errInjected
		}
		return nil
	})
	switch {
	case err != nil:
		if errors.Is(err, projection.ErrConflict) {
			s.stats.conflicts.Add(1)
		}
		return err
	case in.hit(faultAfterCommit, n):
		return errInjected
	case in.hit(faultLostAck, n):
		return fmt.Errorf("%w (injected: the commit landed, its acknowledgement was lost)", projection.ErrConflict)
	}
	return nil
}

func (s *faultStore) Reset(ctx context.Context, name string, reset func(ctx context.Context, tx pgx.Tx) error) error {
	return s.inner.Reset(ctx, name, reset)
}

// modelRecord is one record of the events log as the model wrote it.
type modelRecord struct {
	offset    int64
	id        string
	agg       string
	version   int64
	handled   bool // an OrderCreated or LineAdded: the handlers count it
	newer     bool // schema version 2: order.Definition cannot decode it
	committed bool // false: its transaction was aborted
}

// newEvent is one event a produce action writes.
type newEvent struct {
	agg    string
	status bool // a StatusChanged (no handler) instead of a LineAdded
	newer  bool // a LineAdded of schema version 2
}

// produceMode says how a produce writes its records.
type produceMode int

const (
	plainProduce produceMode = iota
	txnCommit
	txnAbort
)

func (m produceMode) String() string { return [...]string{"plain", "committed-txn", "aborted-txn"}[m] }

// fataler is what the model needs of *testing.T and *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
}

// model is one run: its cluster, its schema, the log it wrote, and what it
// expects of the positions.
type model struct {
	t        fataler
	stats    *modelStats
	c        *kfake.Cluster
	kafka    client.Kafka
	pool     *pgxpool.Pool
	reader   *postgres.Store          // reads positions for the checker
	store    projection.Store[pgx.Tx] // the store under test
	producer *kgo.Client
	txn      *kgo.Client
	logs     *syncbuf.Buffer

	aggs     []string
	log      [modelPartitions][]modelRecord
	versions map[string]int64 // each aggregate's next committed version
	newer    bool             // the decoder that reads schema version 2 is deployed
	newerRan bool             // an instance with it ran since the last Rebuild
	last     map[int32]int64  // positions at the last check
	history  []string         // the actions so far, for failure messages
}

// storeMaker returns the store under test on a run's pool; real is the
// real store on that pool.
type storeMaker func(pool *pgxpool.Pool, real *postgres.Store) projection.Store[pgx.Tx]

func realStore(_ *pgxpool.Pool, real *postgres.Store) projection.Store[pgx.Tx] { return real }

// modelServer is the PostgreSQL server of a model test, shared by its runs.
type modelServer struct {
	srv   *pgtest.Server
	admin *pgxpool.Pool
	runs  atomic.Int64
	stats modelStats
}

// modelStats counts what the runs exercised, so the test can say (and
// assert) that its faults fired.
type modelStats struct {
	steps, events, aborted, applied, instances, busy, conflicts, undecodableStops, rebuilds atomic.Int64
	fired                                                                                   [numFaults]atomic.Int64
}

func (s *modelStats) String() string {
	var fired []string
	for f := faultPositions; f < numFaults; f++ {
		fired = append(fired, fmt.Sprintf("%v=%d", f, s.fired[f].Load()))
	}
	return fmt.Sprintf("%d steps, %d events written (%d in aborted transactions), %d handler calls, %d instances (%d with work to do), %d conflicts, %d undecodable stops, %d rebuilds; faults fired: %s",
		s.steps.Load(), s.events.Load(), s.aborted.Load(), s.applied.Load(), s.instances.Load(), s.busy.Load(), s.conflicts.Load(), s.undecodableStops.Load(), s.rebuilds.Load(), strings.Join(fired, " "))
}

func startModelServer(t *testing.T) *modelServer {
	srv := pgtest.Start(t)
	admin, err := pgxpool.New(context.Background(), srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	return &modelServer{srv: srv, admin: admin}
}

// newModel sets up one run: a kfake cluster, a schema of its own (the
// positions table, and the read model: applied, one row per application
// of an event, deliberately without a unique constraint so that double
// applications are counted; sums, per aggregate), and the producers.
func newModel(t fataler, s *modelServer, makeStore storeMaker) *model {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	schema := fmt.Sprintf("model_%d", s.runs.Add(1))
	if _, err := s.admin.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() { _, _ = s.admin.Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`) })
	cfg, err := pgxpool.ParseConfig(s.srv.URL())
	if err != nil {
		t.Fatalf("%v", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, `CREATE TABLE applied (event_id text NOT NULL, aggregate text NOT NULL, version bigint NOT NULL);
		CREATE TABLE sums (aggregate text PRIMARY KEY, events bigint NOT NULL, version_sum bigint NOT NULL)`); err != nil {
		t.Fatalf("creating the read model: %v", err)
	}
	real, err := postgres.NewStore(ctx, pool)
	if err != nil {
		t.Fatalf("%v", err)
	}
	// Every committed move of a position backwards, seen as it happens
	// (the checker, which runs between actions, would miss one that
	// moved forward again).
	if _, err := pool.Exec(ctx, `CREATE TABLE backwards (partition integer, old bigint, new bigint);
		CREATE FUNCTION log_backwards() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.next_offset < OLD.next_offset THEN
				INSERT INTO backwards VALUES (OLD.partition, OLD.next_offset, NEW.next_offset);
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER log_backwards BEFORE UPDATE ON `+postgres.Table+` FOR EACH ROW EXECUTE FUNCTION log_backwards()`); err != nil {
		t.Fatalf("creating the trigger on the positions: %v", err)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond),
		kafkatest.Topics(modelPartitions, "orders"))
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	m := &model{t: t, stats: &s.stats, c: c, kafka: kafkatest.Kafka(c), pool: pool, reader: real, store: makeStore(pool, real),
		logs: &syncbuf.Buffer{}, versions: map[string]int64{}, last: map[int32]int64{}}
	for _, opts := range [][]kgo.Opt{nil, {kgo.TransactionalID("model-" + schema)}} {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(topics.Partitioner())}, opts...)...)
		if err != nil {
			t.Fatalf("%v", err)
		}
		t.Cleanup(cl.Close)
		if opts == nil {
			m.producer = cl
		} else {
			m.txn = cl
		}
	}
	// Two aggregates per partition.
	per := map[int32]int{}
	for i := 0; len(m.aggs) < 2*modelPartitions; i++ {
		id := "o-" + strconv.Itoa(i)
		if p := partitionOf(id); per[p] < 2 {
			per[p]++
			m.aggs = append(m.aggs, id)
		}
	}
	return m
}

func partitionOf(agg string) int32 { return topics.NewOwner().Of([]byte(agg), modelPartitions) }

// did records an action for failure messages.
func (m *model) did(format string, args ...any) {
	m.history = append(m.history, fmt.Sprintf(format, args...))
}

// fail stops the run with what went wrong, the actions that led there and
// the projection's recent logs.
func (m *model) fail(err error) {
	m.t.Helper()
	logs := m.logs.String()
	if len(logs) > 6000 {
		logs = "…" + logs[len(logs)-6000:]
	}
	m.t.Fatalf("%v\nactions:\n  %s\nprojection logs:\n%s", err, strings.Join(m.history, "\n  "), logs)
}

// produce writes evs in one produce (mode plain) or one transaction.
func (m *model) produce(evs []newEvent, mode produceMode) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	next := map[string]int64{}
	var recs []*kgo.Record
	var meta []modelRecord
	at := time.Now()
	for _, ne := range evs {
		v, ok := next[ne.agg]
		if !ok {
			v = m.versions[ne.agg]
		}
		next[ne.agg] = v + 1
		e := aggregates.Event{ID: ulid.Make(), Source: "/chronicle/order", Subject: ne.agg, Time: at,
			AggregateType: "order", Version: v, SchemaVersion: 1}
		r := modelRecord{id: e.ID.String(), agg: ne.agg, version: v, handled: true, committed: mode != txnAbort}
		switch {
		case v == 0:
			e.Type, e.Data = "order.OrderCreated", order.OrderCreated{UserID: "u-" + ne.agg}
		case ne.status:
			e.Type, e.Data, r.handled = "order.StatusChanged", order.StatusChanged{From: order.StatusNew, To: order.StatusConfirmed}, false
		default:
			e.Type, e.Data = "order.LineAdded", order.LineAdded{ProductID: v, Quantity: 1, UnitPrice: 100}
			if ne.newer {
				e.SchemaVersion, r.newer = 2, true
			}
		}
		b, err := e.Encode()
		if err != nil {
			m.t.Fatalf("%v", err)
		}
		recs = append(recs, &kgo.Record{Topic: modelEvents, Key: topics.EventKey(ne.agg, v), Value: b, Partition: partitionOf(ne.agg)})
		meta = append(meta, r)
	}
	var err error
	switch mode {
	case plainProduce:
		err = m.producer.ProduceSync(ctx, recs...).FirstErr()
	default:
		if err = m.txn.BeginTransaction(); err != nil {
			break
		}
		if err = m.txn.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			break
		}
		err = m.txn.EndTransaction(ctx, kgo.TransactionEndTry(mode == txnCommit))
	}
	if err != nil {
		m.t.Fatalf("producing %d events (%v): %v", len(recs), mode, err)
	}
	for i, rec := range recs {
		meta[i].offset = rec.Offset
		m.log[rec.Partition] = append(m.log[rec.Partition], meta[i])
	}
	if mode != txnAbort {
		for agg, v := range next {
			m.versions[agg] = v
		}
	}
	var parts []string
	for _, r := range meta {
		s := fmt.Sprintf("%s@%d p%d/%d", r.agg, r.version, partitionOf(r.agg), r.offset)
		if r.newer {
			s += "(v2)"
		}
		parts = append(parts, s)
	}
	m.did("produce %v: %s", mode, strings.Join(parts, " "))
	m.stats.events.Add(int64(len(recs)))
	if mode == txnAbort {
		m.stats.aborted.Add(int64(len(recs)))
	}
}

// decoder returns the decoder a new instance gets.
func (m *model) decoder() client.EventDecoder {
	if m.newer {
		return orderNewer()
	}
	return order.Definition()
}

// orderNewer is the order aggregate of a newer release: LineAdded at
// schema version 2 (upcast from 1), so it reads every record.
func orderNewer() *aggregates.Definition[order.State] {
	return aggregates.MustDefine("order",
		aggregates.When("OrderCreated", func(*order.State, order.OrderCreated) {}),
		aggregates.When("LineAdded", func(*order.State, order.LineAdded) {},
			aggregates.SchemaVersion(2), aggregates.Upcast(1, func(old json.RawMessage) (json.RawMessage, error) { return old, nil })),
		aggregates.When("StatusChanged", func(*order.State, order.StatusChanged) {}),
		aggregates.Handle("CreateOrder", func(_ order.State, c order.CreateOrder) ([]any, error) { return []any{order.OrderCreated(c)}, nil }),
	)
}

// handlers count each application of an OrderCreated or LineAdded, with
// in's handler faults.
func (m *model) handlers(in *instance) []projection.Handler[pgx.Tx] {
	apply := func(ctx context.Context, tx pgx.Tx, e aggregates.Event) error {
		if in != nil {
			n := in.handled.Add(1)
			if in.hit(faultMidHandlers, n) || in.hit(faultHandlerError, n) {
				return errInjected
			}
			if in.hit(faultHandlerPanic, n) {
				panic(errInjected)
			}
		}
		m.stats.applied.Add(1)
		if _, err := tx.Exec(ctx, `INSERT INTO applied (event_id, aggregate, version) VALUES ($1, $2, $3)`, e.ID.String(), e.Subject, e.Version); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO sums VALUES ($1, 1, $2) ON CONFLICT (aggregate)
			DO UPDATE SET events = sums.events + 1, version_sum = sums.version_sum + excluded.version_sum`, e.Subject, e.Version)
		return err
	}
	return []projection.Handler[pgx.Tx]{
		projection.On(func(ctx context.Context, tx pgx.Tx, e aggregates.Event, _ order.OrderCreated) error {
			return apply(ctx, tx, e)
		}),
		projection.On(func(ctx context.Context, tx pgx.Tx, e aggregates.Event, _ order.LineAdded) error {
			return apply(ctx, tx, e)
		}),
	}
}

func (m *model) projection(in *instance, group string, batch int) *projection.Projection[pgx.Tx] {
	m.t.Helper()
	p, err := projection.New(projection.Config[pgx.Tx]{
		Name: modelName, Kafka: m.kafka, Prefixes: []string{"orders"}, Decoder: m.decoder(),
		Store: &faultStore{inner: m.store, in: in, stats: m.stats}, Handlers: m.handlers(in), Group: group, BatchSize: batch,
		Reset: func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `TRUNCATE applied, sums`)
			return err
		},
		Logger: slog.New(slog.NewTextHandler(m.logs, nil)).With("group", group),
	})
	if err != nil {
		m.t.Fatalf("%v", err)
	}
	return p
}

// positions reads the stored positions (-1: none) with the real store.
func (m *model) positions() map[int32]int64 {
	m.t.Helper()
	ps, err := m.reader.Positions(context.Background(), modelName)
	if err != nil {
		m.t.Fatalf("%v", err)
	}
	out := map[int32]int64{}
	for p := range int32(modelPartitions) {
		out[p] = -1
	}
	for _, p := range ps {
		if p.Topic != modelEvents {
			m.t.Fatalf("a position on topic %q", p.Topic)
		}
		out[p.Partition] = p.Next
	}
	return out
}

// targets returns where a run from the positions from must stop in each
// partition: after the last committed record, or, when the deployed
// decoder cannot read a record, at it (stops holds those offsets).
func (m *model) targets(from map[int32]int64) (targets, stops map[int32]int64) {
	targets, stops = map[int32]int64{}, map[int32]int64{}
	for p := range int32(modelPartitions) {
		targets[p] = from[p]
		for _, r := range m.log[p] {
			if !r.committed || r.offset < from[p] {
				continue
			}
			if r.newer && !m.newer {
				stops[p] = r.offset
				break
			}
			targets[p] = r.offset + 1
		}
	}
	return targets, stops
}

// runInstances runs one instance per plan until each has returned or the
// positions reached their targets, then stops them and checks how each
// ended: as planned, and caught up unless a fault or a brief run cut it
// short. lockstep holds the instances' first commits until all reach one.
func (m *model) runInstances(lockstep bool, plans ...plan) error {
	m.t.Helper()
	var desc []string
	for _, p := range plans {
		desc = append(desc, p.String())
	}
	m.did("run %s (decoder v%d, lockstep %v)", strings.Join(desc, " + "), map[bool]int{false: 1, true: 2}[m.newer], lockstep)
	from := m.positions()
	targets, stops := m.targets(from)
	var bar *barrier
	if lockstep {
		bar = newBarrier(len(plans))
	}
	if m.newer {
		m.newerRan = true
	}
	m.stats.instances.Add(int64(len(plans)))
	if len(stops) > 0 || !maps.Equal(from, targets) {
		m.stats.busy.Add(int64(len(plans)))
	}
	ins := make([]*instance, len(plans))
	begin := time.Now()
	for i, pl := range plans {
		in := &instance{plan: pl, bar: bar, done: make(chan struct{})}
		in.ctx, in.cancel = context.WithCancel(context.Background())
		p := m.projection(in, pl.group, pl.batch)
		go func() {
			defer close(in.done)
			in.err = p.Run(in.ctx)
		}()
		ins[i] = in
	}
	stopAll := func() {
		for _, in := range ins {
			in.stopped.Store(true)
			in.cancel()
		}
	}
	defer stopAll()
	deadline := begin.Add(30 * time.Second)
	for {
		running := 0
		for _, in := range ins {
			select {
			case <-in.done:
				continue
			default:
			}
			running++
			if in.plan.brief > 0 && time.Since(begin) >= in.plan.brief {
				in.stopped.Store(true)
				in.cancel()
			}
		}
		if running == 0 {
			break
		}
		if len(stops) == 0 && maps.Equal(m.positions(), targets) && (bar == nil || maps.Equal(from, targets) || firstCommitsDone(ins)) {
			break // caught up; a fault that has not fired will not
		}
		if time.Now().After(deadline) {
			stopAll()
			return fmt.Errorf("instances still running after 30s: positions %v, want %v", m.positions(), targets)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopAll()
	var problems []error
	cut := false // a fault fired or a brief run was cancelled
	for i, in := range ins {
		select {
		case <-in.done:
		case <-time.After(20 * time.Second):
			return fmt.Errorf("instance %d (%v): Run did not return within 20s of cancel", i, in.plan)
		}
		if in.fired.Load() {
			m.stats.fired[in.plan.fault].Add(1)
		}
		if in.fired.Load() && in.plan.fault != faultLostAck || in.plan.brief > 0 {
			cut = true
		}
		var re *client.RecordError
		switch err := in.err; {
		case err == nil:
			if !in.stopped.Load() && !in.fired.Load() {
				problems = append(problems, fmt.Errorf("instance %d (%v): Run returned nil without being stopped", i, in.plan))
			}
		case in.fired.Load() && in.plan.fault.fails() &&
			(errors.Is(err, errInjected) || strings.Contains(err.Error(), "panicked: "+errInjected.Error()) && strings.Contains(err.Error(), "rolled back")):
		case errors.As(err, &re):
			m.stats.undecodableStops.Add(1)
			want, ok := stops[re.Partition]
			if !ok || re.Offset != want || re.Topic != modelEvents || !errors.Is(err, aggregates.ErrSchemaVersion) ||
				!strings.Contains(err.Error(), fmt.Sprintf("position stays at offset %d", re.Offset)) {
				problems = append(problems, fmt.Errorf("instance %d (%v): Run = %v; want a stop at an undecodable record of %v", i, in.plan, err, stops))
			}
		default:
			problems = append(problems, fmt.Errorf("instance %d (%v): Run = %w", i, in.plan, err))
		}
	}
	now := m.positions()
	var results []string
	for _, in := range ins {
		results = append(results, fmt.Sprintf("fired=%v err=%v", in.fired.Load(), in.err))
	}
	m.did("  → positions %v (from %v, targets %v, stops %v); %s", now, from, targets, stops, strings.Join(results, "; "))
	if !cut {
		if len(stops) == 0 && !maps.Equal(now, targets) {
			problems = append(problems, fmt.Errorf("positions %v after the run, want %v (every committed record)", now, targets))
		}
		// A lone instance stops at the undecodable record: the records
		// before it are applied, none after it.
		var re *client.RecordError
		if len(stops) > 0 && len(ins) == 1 {
			if !errors.As(ins[0].err, &re) {
				problems = append(problems, fmt.Errorf("Run = %v; want a stop at an undecodable record of %v", ins[0].err, stops))
			} else if now[re.Partition] != targets[re.Partition] {
				// (A transaction's marker may sit between the last record
				// applied and the undecodable one: the position may be there.)
				problems = append(problems, fmt.Errorf("stopped at the undecodable record %d/%d with the position at %d, want %d (every record before it applied, none after)",
					re.Partition, re.Offset, now[re.Partition], targets[re.Partition]))
			}
		}
	}
	return errors.Join(problems...)
}

// firstCommitsDone reports whether each instance returned from its first
// Commit or from Run.
func firstCommitsDone(ins []*instance) bool {
	for _, in := range ins {
		select {
		case <-in.done:
		default:
			if !in.firstDone.Load() {
				return false
			}
		}
	}
	return true
}

// rebuild runs Rebuild (no instance runs).
func (m *model) rebuild() error {
	m.did("rebuild")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.projection(nil, "model", 0).Rebuild(ctx); err != nil {
		return err
	}
	m.last, m.newerRan = map[int32]int64{}, false
	m.stats.rebuilds.Add(1)
	return nil
}

// check compares the read model with a pure replay of the committed events
// below the stored positions: each applied exactly once, none above a
// position, none of an aborted transaction; positions within the log,
// never moved backwards except by Rebuild (between checks, and by any
// committed update, which a trigger records), and never past a record no
// instance could decode.
func (m *model) check() error {
	m.t.Helper()
	ctx := context.Background()
	pos := m.positions()
	var problems []error
	want := map[string]modelRecord{}
	wantSums := map[string][2]int64{}
	known := map[string]modelRecord{}
	for p := range int32(modelPartitions) {
		cur, end := pos[p], int64(-1)
		if last, ok := m.last[p]; ok && cur < last {
			problems = append(problems, fmt.Errorf("the position of partition %d moved backwards from %d to %d without a Rebuild", p, last, cur))
		}
		for _, r := range m.log[p] {
			known[r.id] = r
			if !r.committed {
				continue
			}
			end = r.offset + 1
			if r.newer && !m.newerRan && cur > r.offset {
				problems = append(problems, fmt.Errorf("the position of partition %d is %d, past the undecodable record at %d, and no instance could decode it", p, cur, r.offset))
			}
			if r.offset < cur && r.handled {
				want[r.id] = r
				s := wantSums[r.agg]
				wantSums[r.agg] = [2]int64{s[0] + 1, s[1] + r.version}
			}
		}
		if cur > end {
			problems = append(problems, fmt.Errorf("the position of partition %d is %d, past the log's last committed record (end %d)", p, cur, end))
		}
	}
	rows, err := m.pool.Query(ctx, `DELETE FROM backwards RETURNING partition, old, new`)
	if err != nil {
		m.t.Fatalf("%v", err)
	}
	var part int32
	var old, moved int64
	if _, err := pgx.ForEachRow(rows, []any{&part, &old, &moved}, func() error {
		problems = append(problems, fmt.Errorf("the position of partition %d moved backwards from %d to %d", part, old, moved))
		return nil
	}); err != nil {
		m.t.Fatalf("%v", err)
	}
	rows, err = m.pool.Query(ctx, `SELECT event_id, count(*) FROM applied GROUP BY event_id`)
	if err != nil {
		m.t.Fatalf("%v", err)
	}
	got := map[string]int64{}
	var id string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &n}, func() error { got[id] = n; return nil }); err != nil {
		m.t.Fatalf("%v", err)
	}
	for id, n := range got {
		r, ok := want[id]
		switch {
		case !ok && !known[id].committed && known[id].id != "":
			problems = append(problems, fmt.Errorf("event %s (%s@%d) of an aborted transaction applied %d times", id, known[id].agg, known[id].version, n))
		case !ok && known[id].id != "":
			r = known[id]
			problems = append(problems, fmt.Errorf("event %s@%d at %d/%d applied %d times, but the position is %d", r.agg, r.version, partitionOf(r.agg), r.offset, n, pos[partitionOf(r.agg)]))
		case !ok:
			problems = append(problems, fmt.Errorf("an unknown event %s applied %d times", id, n))
		case n != 1:
			problems = append(problems, fmt.Errorf("event %s@%d at %d/%d applied %d times", r.agg, r.version, partitionOf(r.agg), r.offset, n))
		}
	}
	for id, r := range want {
		if got[id] == 0 {
			problems = append(problems, fmt.Errorf("event %s@%d at %d/%d is below the position %d but was not applied", r.agg, r.version, partitionOf(r.agg), r.offset, pos[partitionOf(r.agg)]))
		}
	}
	rows, err = m.pool.Query(ctx, `SELECT aggregate, events, version_sum FROM sums`)
	if err != nil {
		m.t.Fatalf("%v", err)
	}
	gotSums := map[string][2]int64{}
	var agg string
	var events, vsum int64
	if _, err := pgx.ForEachRow(rows, []any{&agg, &events, &vsum}, func() error { gotSums[agg] = [2]int64{events, vsum}; return nil }); err != nil {
		m.t.Fatalf("%v", err)
	}
	for _, a := range m.aggs {
		if gotSums[a] != wantSums[a] {
			problems = append(problems, fmt.Errorf("aggregate %s: %d events with version sum %d in the read model, the replay says %d and %d",
				a, gotSums[a][0], gotSums[a][1], wantSums[a][0], wantSums[a][1]))
		}
	}
	m.last = pos
	return errors.Join(problems...)
}

// Actions, each drawing its parameters.

func (m *model) drawProduce(t *rapid.T) {
	n := rapid.IntRange(1, 12).Draw(t, "events")
	evs := make([]newEvent, n)
	for i := range evs {
		evs[i] = newEvent{agg: rapid.SampledFrom(m.aggs).Draw(t, "aggregate"), status: rapid.IntRange(0, 3).Draw(t, "status") == 0}
	}
	mode := []produceMode{plainProduce, plainProduce, txnCommit, txnAbort}[rapid.IntRange(0, 3).Draw(t, "mode")]
	m.produce(evs, mode)
}

// drawProduceNewer writes a LineAdded of schema version 2, which only the
// newer decoder reads.
func (m *model) drawProduceNewer(t *rapid.T) {
	var created []string
	for _, a := range m.aggs {
		if m.versions[a] > 0 {
			created = append(created, a)
		}
	}
	if len(created) == 0 {
		return
	}
	ev := newEvent{agg: rapid.SampledFrom(created).Draw(t, "aggregate"), newer: true}
	m.produce([]newEvent{ev}, []produceMode{plainProduce, txnCommit}[rapid.IntRange(0, 1).Draw(t, "mode")])
}

func drawBatch(t *rapid.T) int { return rapid.IntRange(1, 6).Draw(t, "batch") }

func (m *model) mustRun(lockstep bool, plans ...plan) {
	m.t.Helper()
	if err := m.runInstances(lockstep, plans...); err != nil {
		m.fail(err)
	}
}

func (m *model) drawCatchUp(t *rapid.T) {
	m.mustRun(false, plan{group: "model", batch: drawBatch(t)})
}

func drawFault(t *rapid.T) (fault, int64) {
	return fault(rapid.IntRange(int(faultPositions), int(numFaults)-1).Draw(t, "fault")), int64(rapid.IntRange(1, 3).Draw(t, "at"))
}

func (m *model) drawCrash(t *rapid.T) {
	f, at := drawFault(t)
	m.mustRun(false, plan{group: "model", batch: drawBatch(t), fault: f, at: at})
}

func (m *model) drawBrief(t *rapid.T) {
	d := time.Duration(rapid.IntRange(0, 300).Draw(t, "ms")) * time.Millisecond
	m.mustRun(false, plan{group: "model", batch: drawBatch(t), brief: d + time.Microsecond})
}

// drawTwins starts two instances at once: in one group (they share the
// partitions, with a rebalance) or in two (each reads every partition, as
// a zombie that lost its partitions would).
func (m *model) drawTwins(t *rapid.T) {
	same := rapid.Bool().Draw(t, "same group")
	other := "model"
	if !same {
		other = "zombie"
	}
	lockstep := !same && rapid.Bool().Draw(t, "lockstep")
	first := plan{group: "model", batch: drawBatch(t)}
	if rapid.IntRange(0, 2).Draw(t, "faulty") == 0 {
		first.fault, first.at = drawFault(t)
	}
	m.mustRun(lockstep, first, plan{group: other, batch: drawBatch(t)})
}

// runModel draws between minSteps and maxSteps actions, checking the
// invariants after each, then deploys the newer decoder and checks that a
// last run applies every committed event.
func runModel(t *rapid.T, m *model, minSteps, maxSteps int) {
	actions := map[string]func(*rapid.T){
		"produce":       m.drawProduce,
		"produce2":      m.drawProduce,
		"produce3":      m.drawProduce,
		"produce4":      m.drawProduce,
		"produce-newer": m.drawProduceNewer,
		"catch-up":      m.drawCatchUp,
		"crash":         m.drawCrash,
		"crash2":        m.drawCrash,
		"crash3":        m.drawCrash,
		"brief":         m.drawBrief,
		"twins":         m.drawTwins,
		"twins2":        m.drawTwins,
		"deploy": func(*rapid.T) {
			m.newer = !m.newer
			m.did("deploy decoder v%d", map[bool]int{false: 1, true: 2}[m.newer])
		},
		"rebuild": func(*rapid.T) {
			if err := m.rebuild(); err != nil {
				m.fail(err)
			}
		},
	}
	names := make([]string, 0, len(actions))
	for n := range actions {
		names = append(names, n)
	}
	slices.Sort(names)
	steps := rapid.IntRange(minSteps, maxSteps).Draw(t, "steps")
	for range steps {
		actions[rapid.SampledFrom(names).Draw(t, "action")](t)
		m.stats.steps.Add(1)
		if err := m.check(); err != nil {
			m.fail(err)
		}
	}
	m.newer = true
	m.mustRun(false, plan{group: "model", batch: 500})
	if err := m.check(); err != nil {
		m.fail(err)
	}
}

// setFlag sets a rapid flag for the rest of the test.
func setFlag(t *testing.T, name, value string) {
	f := flag.Lookup(name)
	old := f.Value.String()
	if err := f.Value.Set(value); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Value.Set(old) })
}

// modelChecks sets rapid's number of runs for this test to runs
// (CHRONICLE_MODEL_LONG=1: long), unless -rapid.checks was given.
func modelChecks(t *testing.T, runs, long int) {
	if os.Getenv("CHRONICLE_MODEL_LONG") == "1" {
		runs = long
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.checks" })
	if !set {
		setFlag(t, "rapid.checks", strconv.Itoa(runs))
	}
}

// TestProjectionModel runs the projection protocol model against the real
// store: every action's invariants hold.
func TestProjectionModel(t *testing.T) {
	s := startModelServer(t)
	modelChecks(t, 100, 1000)
	rapid.Check(t, func(rt *rapid.T) {
		runModel(rt, newModel(rt, s, realStore), 10, 40)
	})
	t.Logf("model: %v", &s.stats)
}

// Broken stores, to show that the model fails when the protocol is broken.

// splitStore is a broken Store: it commits the read-model writes and the
// positions in two transactions (with the fault hook between them), so a
// crash between them, or a conflict on the positions, leaves events
// applied with their position unmoved: a restart applies them again.
type splitStore struct {
	*postgres.Store
	pool *pgxpool.Pool
}

func newSplitStore(pool *pgxpool.Pool, real *postgres.Store) projection.Store[pgx.Tx] {
	return &splitStore{Store: real, pool: pool}
}

func (s *splitStore) Commit(ctx context.Context, name string, moves []projection.Move, apply func(ctx context.Context, tx pgx.Tx) error) error {
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return apply(ctx, tx) }); err != nil {
		return err
	}
	if between, ok := ctx.Value(betweenKey{}).(func() error); ok {
		if err := between(); err != nil {
			return err
		}
	}
	return s.Store.Commit(ctx, name, moves, func(context.Context, pgx.Tx) error { return nil })
}

// unconditionalStore is a broken Store: it moves positions to where the
// batch ends whatever they were, so two instances reading the same records
// (twins in two groups, a zombie) both apply them.
type unconditionalStore struct {
	*postgres.Store
	pool *pgxpool.Pool
}

func newUnconditionalStore(pool *pgxpool.Pool, real *postgres.Store) projection.Store[pgx.Tx] {
	return &unconditionalStore{Store: real, pool: pool}
}

func (s *unconditionalStore) Commit(ctx context.Context, name string, moves []projection.Move, apply func(ctx context.Context, tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, m := range moves {
			if _, err := tx.Exec(ctx, `INSERT INTO `+postgres.Table+` (projection, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
				ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = excluded.next_offset`, name, m.Topic, m.Partition, m.To); err != nil {
				return err
			}
		}
		return apply(ctx, tx)
	})
}

// oneAggregate returns n events of one new aggregate (all in one
// partition), created first.
func oneAggregate(m *model, n int) []newEvent {
	evs := make([]newEvent, n)
	for i := range evs {
		evs[i] = newEvent{agg: m.aggs[0]}
	}
	return evs
}

// A crash between the two transactions of splitStore: the first check
// finds events applied above their position, and after a restart, events
// applied twice. The same steps on the real store pass.
func TestModelCatchesAStoreThatCommitsInTwoTransactions(t *testing.T) {
	s := startModelServer(t)
	for _, tc := range []struct {
		name   string
		store  storeMaker
		broken bool
	}{{"real", realStore, false}, {"split", newSplitStore, true}} {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t, s, tc.store)
			m.produce(oneAggregate(m, 6), plainProduce)
			if err := m.runInstances(false, plan{group: "model", batch: 3, fault: faultBetween, at: 1}); err != nil {
				t.Fatal(err)
			}
			crashed := m.check()
			if err := m.runInstances(false, plan{group: "model", batch: 3}); err != nil {
				t.Fatal(err)
			}
			restarted := m.check()
			if !tc.broken {
				if err := errors.Join(crashed, restarted); err != nil {
					t.Fatalf("the real store failed the checks: %v", err)
				}
				return
			}
			if crashed == nil || !strings.Contains(crashed.Error(), "but the position is -1") {
				t.Errorf("after the crash between the transactions, check = %v; want events applied above their position", crashed)
			}
			if restarted == nil || !strings.Contains(restarted.Error(), "applied 2 times") {
				t.Errorf("after the restart, check = %v; want events applied twice", restarted)
			}
			t.Logf("the checks caught it:\n%v\n%v", crashed, restarted)
		})
	}
}

// Twins in two groups, held until both read the same records: with
// unconditionalStore both apply them. The same steps on the real store
// pass (one of the two conflicts and rolls back).
func TestModelCatchesAStoreWithoutConditionalMoves(t *testing.T) {
	s := startModelServer(t)
	for _, tc := range []struct {
		name   string
		store  storeMaker
		broken bool
	}{{"real", realStore, false}, {"unconditional", newUnconditionalStore, true}} {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t, s, tc.store)
			m.produce(oneAggregate(m, 8), plainProduce)
			if err := m.runInstances(true, plan{group: "model", batch: 4}, plan{group: "zombie", batch: 4}); err != nil && !tc.broken {
				t.Fatal(err)
			}
			err := m.check()
			if !tc.broken {
				if err != nil {
					t.Fatalf("the real store failed the checks: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "applied 2 times") {
				t.Fatalf("check = %v; want events applied twice\n%s\n%s", err, strings.Join(m.history, "\n"), m.logs.String())
			}
			t.Logf("the check caught it:\n%v", err)
		})
	}
}

// failureTB is a rapid.TB that records failures instead of failing the
// test: the property must fail under it.
type failureTB struct {
	name   string
	failed bool
	log    []string
}

func (f *failureTB) Helper()      {}
func (f *failureTB) Name() string { return f.name }
func (f *failureTB) Logf(format string, args ...any) {
	f.log = append(f.log, fmt.Sprintf(format, args...))
}
func (f *failureTB) Log(args ...any) { f.log = append(f.log, fmt.Sprint(args...)) }
func (f *failureTB) Skipf(format string, args ...any) {
	f.Logf(format, args...)
}
func (f *failureTB) Skip(args ...any)                  { f.Log(args...) }
func (f *failureTB) SkipNow()                          {}
func (f *failureTB) Errorf(format string, args ...any) { f.failed = true; f.Logf(format, args...) }
func (f *failureTB) Error(args ...any)                 { f.failed = true; f.Log(args...) }
func (f *failureTB) Fatalf(format string, args ...any) { f.failed = true; f.Logf(format, args...) }
func (f *failureTB) Fatal(args ...any)                 { f.failed = true; f.Log(args...) }
func (f *failureTB) FailNow()                          { f.failed = true }
func (f *failureTB) Fail()                             { f.failed = true }
func (f *failureTB) Failed() bool                      { return f.failed }

// firstFailure remembers the first failure of the model.
type firstFailure struct {
	*rapid.T
	msg *string
}

func (f firstFailure) Fatalf(format string, args ...any) {
	if *f.msg == "" {
		*f.msg = fmt.Sprintf(format, args...)
	}
	f.T.Fatalf(format, args...)
}

// The unchanged state machine, run on each broken store, fails within a
// few runs: its random actions reach the faults that break them.
func TestModelFindsBrokenStores(t *testing.T) {
	s := startModelServer(t)
	setFlag(t, "rapid.nofailfile", "true")
	setFlag(t, "rapid.checks", "60")
	for _, tc := range []struct {
		name  string
		store storeMaker
	}{{"split", newSplitStore}, {"unconditional", newUnconditionalStore}} {
		t.Run(tc.name, func(t *testing.T) {
			var first string
			runs := 0
			tb := &failureTB{name: t.Name()}
			rapid.Check(tb, func(rt *rapid.T) {
				if first != "" {
					return // rapid retries and shrinks: the first failure is the finding
				}
				runs++
				runModel(rt, newModel(firstFailure{rt, &first}, s, tc.store), 10, 40)
			})
			if !tb.failed || first == "" {
				t.Fatalf("the model passed %d runs on a broken store", runs)
			}
			t.Logf("run %d failed:\n%s", runs, first)
		})
	}
}
