package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

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

const partitions = 4

var events = topics.For("orders").Events

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// orderHistory returns the events of order id: created, then lines lines.
func orderHistory(t *testing.T, id string, lines int) []aggregates.Event {
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
			t.Fatal(err)
		}
		out = append(out, evs...)
	}
	run(order.CreateOrder{UserID: "user-" + id})
	for i := range lines {
		run(order.AddLine{ProductID: int64(i + 1), Quantity: 1, UnitPrice: 100})
	}
	return out
}

func record(t *testing.T, e aggregates.Event) *kgo.Record {
	t.Helper()
	v, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: events, Key: topics.EventKey(e.Subject, e.Version), Value: v,
		Partition: topics.NewOwner().Of([]byte(e.Subject), partitions)}
}

func produce(t *testing.T, c *kfake.Cluster, recs ...*kgo.Record) {
	t.Helper()
	cl := kafkatest.Client(t, c, kgo.RecordPartitioner(topics.Partitioner()))
	if err := cl.ProduceSync(testContext(t, 10*time.Second), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// writeOrders writes n orders of lines lines each and returns the event count.
func writeOrders(t *testing.T, c *kfake.Cluster, n, lines int) int {
	var recs []*kgo.Record
	for i := range n {
		for _, e := range orderHistory(t, fmt.Sprintf("order-%d", i), lines) {
			recs = append(recs, record(t, e))
		}
	}
	produce(t, c, recs...)
	return len(recs)
}

// counts is a read model that counts each order's events and sums their
// versions: an event applied twice or skipped changes both.
const counts = `CREATE TABLE counts (order_id text PRIMARY KEY, events bigint NOT NULL, version_sum bigint NOT NULL)`

func countHandlers() []projection.Handler[pgx.Tx] {
	bump := func(ctx context.Context, tx pgx.Tx, e aggregates.Event) error {
		_, err := tx.Exec(ctx, `INSERT INTO counts VALUES ($1, 1, $2) ON CONFLICT (order_id)
			DO UPDATE SET events = counts.events + 1, version_sum = counts.version_sum + excluded.version_sum`, e.Subject, e.Version)
		return err
	}
	return []projection.Handler[pgx.Tx]{
		projection.On(func(ctx context.Context, tx pgx.Tx, e aggregates.Event, _ order.OrderCreated) error {
			return bump(ctx, tx, e)
		}),
		projection.On(func(ctx context.Context, tx pgx.Tx, e aggregates.Event, _ order.LineAdded) error {
			return bump(ctx, tx, e)
		}),
	}
}

type fixture struct {
	c     *kfake.Cluster
	pool  *pgxpool.Pool
	store *postgres.Store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := pgtest.Start(t)
	ctx := testContext(t, 30*time.Second)
	pool, err := pgxpool.New(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, counts); err != nil {
		t.Fatal(err)
	}
	store, err := postgres.NewStore(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{c: kafkatest.Start(t, kafkatest.Topics(partitions, "orders")), pool: pool, store: store}
}

func (f *fixture) projection(t *testing.T, change func(*projection.Config[pgx.Tx])) *projection.Projection[pgx.Tx] {
	t.Helper()
	cfg := projection.Config[pgx.Tx]{Name: "counts", Kafka: kafkatest.Kafka(f.c), Prefixes: []string{"orders"}, Decoder: order.Definition(),
		Store: f.store, Handlers: countHandlers(), BatchSize: 7,
		Reset: func(ctx context.Context, tx pgx.Tx) error { _, err := tx.Exec(ctx, `TRUNCATE counts`); return err }}
	if change != nil {
		change(&cfg)
	}
	p, err := projection.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs p until the returned stop is called (or the test ends).
func start(t *testing.T, p *projection.Projection[pgx.Tx]) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
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
	t.Cleanup(func() { _ = stop() })
	return stop
}

// applied returns the events counted and the sum of versions.
func (f *fixture) applied(t *testing.T) (events, versionSum int64) {
	t.Helper()
	if err := f.pool.QueryRow(context.Background(), `SELECT coalesce(sum(events), 0), coalesce(sum(version_sum), 0) FROM counts`).Scan(&events, &versionSum); err != nil {
		t.Fatal(err)
	}
	return events, versionSum
}

// waitApplied waits until n events are counted.
func (f *fixture) waitApplied(t *testing.T, n int64) {
	t.Helper()
	ctx := testContext(t, 30*time.Second)
	for {
		if got, _ := f.applied(t); got >= n {
			return
		}
		select {
		case <-ctx.Done():
			got, _ := f.applied(t)
			t.Fatalf("applied %d of %d events", got, n)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// position returns the stored position of a partition (-1: none).
func (f *fixture) position(t *testing.T, name string, part int32) int64 {
	t.Helper()
	ps, err := f.store.Positions(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Topic == events && p.Partition == part {
			return p.Next
		}
	}
	return -1
}

// 20 orders of 5 lines, 6 events each: versions 0..5 sum to 15.
func checkCounts(t *testing.T, f *fixture, orders int) {
	t.Helper()
	n, sum := f.applied(t)
	if n != int64(orders*6) || sum != int64(orders*15) {
		t.Errorf("applied %d events with version sum %d, want %d and %d", n, sum, orders*6, orders*15)
	}
	var wrong int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM counts WHERE events <> 6 OR version_sum <> 15`).Scan(&wrong); err != nil {
		t.Fatal(err)
	}
	if wrong != 0 {
		t.Errorf("%d orders have a wrong count", wrong)
	}
}

func TestProjectionAppliesEveryEventOnceAndStoresItsPositions(t *testing.T) {
	f := newFixture(t)
	total := writeOrders(t, f.c, 20, 5)
	stop := start(t, f.projection(t, nil))
	f.waitApplied(t, int64(total))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, f, 20)
	ps, err := f.store.Positions(context.Background(), "counts")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, p := range ps {
		sum += p.Next
	}
	if sum != int64(total) {
		t.Errorf("positions sum to %d, want %d (every record of every partition)", sum, total)
	}

	// A restart goes on from the stored positions: nothing is applied again.
	more := orderHistory(t, "late", 5)
	for _, e := range more {
		produce(t, f.c, record(t, e))
	}
	stop = start(t, f.projection(t, nil))
	f.waitApplied(t, int64(total+len(more)))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, f, 21)
}

// Two instances with distinct consumer groups both read every partition,
// as a zombie that lost its partitions (or a misconfigured twin) would: the
// conditional position update lets exactly one of them apply each batch.
func TestProjectionTwinsFightingOverPartitionsApplyEachEventOnce(t *testing.T) {
	f := newFixture(t)
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	a := start(t, f.projection(t, func(c *projection.Config[pgx.Tx]) { c.Group = "twin-a"; c.Logger = log }))
	b := start(t, f.projection(t, func(c *projection.Config[pgx.Tx]) { c.Group = "twin-b"; c.Logger = log }))
	total := 0
	for round := range 4 {
		var recs []*kgo.Record
		for i := range 10 {
			for _, e := range orderHistory(t, fmt.Sprintf("order-%d", round*10+i), 5) {
				recs = append(recs, record(t, e))
			}
		}
		produce(t, f.c, recs...)
		total += len(recs)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	f.waitApplied(t, int64(total))
	if err := errors.Join(a(), b()); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, f, 40)
	t.Logf("conflicts resolved: %d", strings.Count(logs.String(), "moved by another writer"))
}

// newerLine is an order.LineAdded as a newer release writes it: schema
// version 2, which order.Definition() cannot read.
func newerLine(t *testing.T, id string, version int64) *kgo.Record {
	e := orderHistory(t, id, int(version))[version]
	e.SchemaVersion = 2
	return record(t, e)
}

func TestProjectionStopsAtAnUndecodableEventAndKeepsItsPosition(t *testing.T) {
	f := newFixture(t)
	evs := orderHistory(t, "o", 5)
	part := topics.NewOwner().Of([]byte("o"), partitions)
	produce(t, f.c, record(t, evs[0]), record(t, evs[1]), newerLine(t, "o", 2), record(t, evs[3]))

	for run := range 2 { // a restart stops at the same place
		err := f.projection(t, nil).Run(testContext(t, 20*time.Second))
		var re *client.RecordError
		if !errors.As(err, &re) || !errors.Is(err, aggregates.ErrSchemaVersion) {
			t.Fatalf("run %d: Run = %v, want a *client.RecordError matching ErrSchemaVersion", run, err)
		}
		for _, w := range []string{"orders.events", fmt.Sprintf("/%d offset 2", part), `"order.LineAdded"`, "schema version 2", "position stays at offset 2"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
		if got := f.position(t, "counts", part); got != 2 {
			t.Fatalf("run %d: position %d, want 2 (the undecodable event)", run, got)
		}
		if n, _ := f.applied(t); n != 2 {
			t.Errorf("run %d: applied %d events, want the 2 before the undecodable one", run, n)
		}
	}

	// SkipUndecodable passes over it, records that in the position, and
	// says so.
	var logs syncbuf.Buffer
	stop := start(t, f.projection(t, func(c *projection.Config[pgx.Tx]) {
		c.SkipUndecodable = true
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	}))
	f.waitApplied(t, 3)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := f.position(t, "counts", part); got != 4 {
		t.Errorf("position %d, want 4 (past the skipped event and the next)", got)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "offset=2") || !strings.Contains(logs.String(), "schema_version=2") {
		t.Errorf("no warning names the skipped event:\n%s", logs.String())
	}
}

// orderV2 reads LineAdded version 2 (a newer release).
func orderV2() *aggregates.Definition[order.State] {
	return aggregates.MustDefine("order",
		aggregates.When("OrderCreated", func(s *order.State, e order.OrderCreated) {}),
		aggregates.When("LineAdded", func(s *order.State, e order.LineAdded) {},
			aggregates.SchemaVersion(2), aggregates.Upcast(1, func(old json.RawMessage) (json.RawMessage, error) { return old, nil })),
		aggregates.Handle("CreateOrder", func(_ order.State, c order.CreateOrder) ([]any, error) { return []any{order.OrderCreated(c)}, nil }),
	)
}

func TestProjectionResumesAtTheUndecodableEventWithANewerDecoder(t *testing.T) {
	f := newFixture(t)
	evs := orderHistory(t, "o", 5)
	produce(t, f.c, record(t, evs[0]), record(t, evs[1]), newerLine(t, "o", 2), record(t, evs[3]))
	if err := f.projection(t, nil).Run(testContext(t, 20*time.Second)); !errors.Is(err, aggregates.ErrSchemaVersion) {
		t.Fatalf("Run = %v, want ErrSchemaVersion", err)
	}
	stop := start(t, f.projection(t, func(c *projection.Config[pgx.Tx]) { c.Decoder = orderV2() }))
	f.waitApplied(t, 4)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n, sum := f.applied(t); n != 4 || sum != 0+1+2+3 {
		t.Errorf("applied %d events, version sum %d; want 4 and 6", n, sum)
	}
}

func TestRebuildReplaysFromScratch(t *testing.T) {
	f := newFixture(t)
	total := writeOrders(t, f.c, 10, 5)
	stop := start(t, f.projection(t, nil))
	f.waitApplied(t, int64(total))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Damage the read model, as a buggy handler would have.
	if _, err := f.pool.Exec(context.Background(), `UPDATE counts SET events = 99`); err != nil {
		t.Fatal(err)
	}
	p := f.projection(t, nil)
	if err := p.Rebuild(testContext(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.applied(t); n != 0 || f.position(t, "counts", 0) != -1 {
		t.Fatalf("after Rebuild: %d events counted, position %d; want an empty read model and no positions", n, f.position(t, "counts", 0))
	}
	stop = start(t, p)
	f.waitApplied(t, int64(total))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, f, 10)
}

func TestAHandlerErrorRollsTheBatchBackAndStops(t *testing.T) {
	f := newFixture(t)
	writeOrders(t, f.c, 1, 5)
	boom := errors.New("boom")
	p := f.projection(t, func(c *projection.Config[pgx.Tx]) {
		c.BatchSize = 100
		c.Handlers = append(c.Handlers, projection.On(func(_ context.Context, _ pgx.Tx, e aggregates.Event, _ order.StatusChanged) error { return nil }))
		c.Handlers[1] = projection.On(func(ctx context.Context, tx pgx.Tx, e aggregates.Event, _ order.LineAdded) error {
			if e.Version == 4 {
				return boom
			}
			_, err := tx.Exec(ctx, `UPDATE counts SET events = events + 1 WHERE order_id = $1`, e.Subject)
			return err
		})
	})
	err := p.Run(testContext(t, 20*time.Second))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "offset 4") || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("Run = %v, want the handler's error at offset 4", err)
	}
	// The whole batch (versions 0..5) was rolled back with its position.
	part := topics.NewOwner().Of([]byte("order-0"), partitions)
	if n, _ := f.applied(t); n != 0 || f.position(t, "counts", part) != -1 {
		t.Errorf("applied %d events, position %d: want nothing committed", n, f.position(t, "counts", part))
	}
}

func TestConfigProblems(t *testing.T) {
	_, err := projection.New(projection.Config[pgx.Tx]{
		Decoder: order.Definition(),
		Handlers: []projection.Handler[pgx.Tx]{
			projection.On(func(context.Context, pgx.Tx, aggregates.Event, order.AddLine) error { return nil }),
			{},
		},
	})
	for _, w := range []string{"Name", "Kafka.Brokers", "Prefixes", "Store", "order.AddLine would never run", "zero Handler"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("New = %v, want it to mention %q", err, w)
		}
	}
}

// Run stopped while it starts (during its check of the topics) returns nil,
// as it does when stopped later. Found by the projection model, which stops
// an instance at once when it has nothing to do.
func TestRunStoppedWhileStartingReturnsNil(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.projection(t, nil).Run(ctx); err != nil {
		t.Fatalf("Run with a cancelled context = %v, want nil", err)
	}
}

// A member kicked out of its consumer group (its session expired, or a slow
// batch held a rebalance back too long) rejoins and goes on from the stored
// positions: the client's group-session notice does not stop Run. Found by
// the projection model, where a twin was kicked while its batch waited.
func TestProjectionGoesOnAfterLosingItsGroupSession(t *testing.T) {
	f := newFixture(t)
	total := writeOrders(t, f.c, 5, 5)
	var logs syncbuf.Buffer
	stop := start(t, f.projection(t, func(c *projection.Config[pgx.Tx]) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }))
	f.waitApplied(t, int64(total))
	kicked := make(chan struct{})
	f.c.ControlKey(int16(kmsg.Heartbeat), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		resp := kreq.(*kmsg.HeartbeatRequest).ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.UnknownMemberID.Code
		close(kicked)
		return resp, nil, true
	})
	select {
	case <-kicked:
	case <-testContext(t, 20*time.Second).Done():
		t.Fatal("no heartbeat within 20s")
	}
	late := orderHistory(t, "late", 5)
	for _, e := range late {
		produce(t, f.c, record(t, e))
	}
	f.waitApplied(t, int64(total+len(late)))
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	checkCounts(t, f, 6)
	if !strings.Contains(logs.String(), "lost its consumer group session") {
		t.Errorf("no warning says the session was lost:\n%s", logs.String())
	}
}
