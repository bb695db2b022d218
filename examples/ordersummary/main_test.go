package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/internal/pgtest"
	"github.com/chronicle-es/chronicle/internal/proctest"
	"github.com/chronicle-es/chronicle/topics"
)

const partitions = 6

// binary is the ordersummary command, built once by TestMain: the tests run
// and SIGKILL it as a separate process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ordersummary-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "ordersummary")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building ordersummary: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// summary is one row of the read model, or what a replay says it must be.
type summary struct {
	Status  string
	Lines   int
	Total   int64
	Version int64
	Events  int64
	UserID  string
}

// world is a kfake cluster with the orders topics, a PostgreSQL server, and
// the orders written so far.
type world struct {
	t       *testing.T
	c       *kfake.Cluster
	dbURL   string
	pool    *pgxpool.Pool
	rng     *rand.Rand
	orders  map[string]aggregates.Aggregate
	history map[string][]aggregates.Event
	written int
}

func newWorld(t *testing.T) *world {
	t.Helper()
	srv := pgtest.Start(t)
	c := kafkatest.Start(t, kafkatest.Topics(partitions, "orders"))
	pool, err := pgxpool.New(context.Background(), srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &world{t: t, c: c, dbURL: srv.URL(), pool: pool, rng: rand.New(rand.NewPCG(1, 2)),
		orders: map[string]aggregates.Aggregate{}, history: map[string][]aggregates.Event{}}
}

// writeOrders runs n random commands on the orders (new ones among them)
// through the real aggregate and writes the events they produce, as the
// processor would.
func (w *world) writeOrders(n int) {
	w.t.Helper()
	kind := order.Definition()
	var recs []*kgo.Record
	for range n {
		var id string
		if len(w.orders) == 0 || w.rng.IntN(8) == 0 {
			id = fmt.Sprintf("order-%d", len(w.orders))
			w.orders[id] = kind.NewAggregate(id)
		} else {
			id = fmt.Sprintf("order-%d", w.rng.IntN(len(w.orders)))
		}
		a := w.orders[id]
		var payload any
		switch r := w.rng.IntN(10); {
		case a.Version() < 0:
			payload = order.CreateOrder{UserID: "user-" + id}
		case r < 6:
			p := int64(1 + w.rng.IntN(6))
			payload = order.AddLine{ProductID: p, Quantity: int64(1 + w.rng.IntN(3)), UnitPrice: 100*p + 99}
		case r < 8:
			payload = order.RemoveLine{ProductID: int64(1 + w.rng.IntN(6))}
		default:
			payload = order.ChangeStatus{Status: []order.Status{order.StatusConfirmed, order.StatusPaid, order.StatusShipped, order.StatusCancelled}[w.rng.IntN(4)]}
		}
		cmd, err := kind.NewCommand(id, payload, aggregates.Metadata{})
		if err != nil {
			w.t.Fatal(err)
		}
		evs, err := a.Execute(&cmd, time.Now())
		a.ClearChanges()
		if err != nil {
			continue // rejected: no events, as on the real processor
		}
		for _, e := range evs {
			v, err := e.Encode()
			if err != nil {
				w.t.Fatal(err)
			}
			recs = append(recs, &kgo.Record{Topic: topics.For("orders").Events, Key: topics.EventKey(id, e.Version), Value: v,
				Partition: topics.NewOwner().Of([]byte(id), partitions)})
			w.history[id] = append(w.history[id], e)
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.c.ListenAddrs()...), kgo.RecordPartitioner(topics.Partitioner()))
	if err != nil {
		w.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		w.t.Fatal(err)
	}
	w.written += len(recs)
}

// replay computes the summaries from the events, independently of the
// projection: through the order aggregate's own apply functions.
func (w *world) replay() map[string]summary {
	w.t.Helper()
	out := map[string]summary{}
	for id, evs := range w.history {
		a := order.Definition().New(id)
		for i := range evs {
			if err := a.Apply(&evs[i]); err != nil {
				w.t.Fatal(err)
			}
		}
		s := a.State()
		out[id] = summary{Status: string(s.Status), Lines: len(s.Lines), Total: s.Total, Version: a.Version(), Events: int64(len(evs)), UserID: s.UserID}
	}
	return out
}

// readModel returns the order_summaries table.
func (w *world) readModel() map[string]summary {
	w.t.Helper()
	rows, err := w.pool.Query(context.Background(), `SELECT order_id, user_id, status, line_count, total, version, events FROM order_summaries`)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]summary{}
	for rows.Next() {
		var id string
		var s summary
		if err := rows.Scan(&id, &s.UserID, &s.Status, &s.Lines, &s.Total, &s.Version, &s.Events); err != nil {
			w.t.Fatal(err)
		}
		out[id] = s
	}
	if err := rows.Err(); err != nil {
		w.t.Fatal(err)
	}
	return out
}

// applied is the number of events the read model holds (0 before its
// tables exist).
func (w *world) applied() int64 {
	var n int64
	if err := w.pool.QueryRow(context.Background(), `SELECT coalesce(sum(events), 0) FROM order_summaries`).Scan(&n); err != nil {
		return 0
	}
	return n
}

// waitApplied waits until at least n events are applied, failing if every
// instance exited first or after a generous bound.
func (w *world) waitApplied(n int64, procs ...*proctest.Process) {
	w.t.Helper()
	deadline := time.Now().Add(5 * time.Minute) // a bound against hangs, not a speed check
	for w.applied() < n {
		alive := false
		for _, p := range procs {
			select {
			case <-p.Exited():
			default:
				alive = true
			}
		}
		if !alive {
			w.t.Fatalf("every instance exited with %d of %d events applied:\n%s", w.applied(), n, outputs(procs))
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%d of %d events applied after 5 minutes:\n%s", w.applied(), n, outputs(procs))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// check compares the read model with the replay.
func (w *world) check(procs ...*proctest.Process) {
	w.t.Helper()
	want, got := w.replay(), w.readModel()
	if len(got) != len(want) {
		w.t.Errorf("the read model has %d orders, the replay %d", len(got), len(want))
	}
	bad := 0
	for id, ws := range want {
		if gs := got[id]; gs != ws {
			if bad++; bad <= 5 {
				w.t.Errorf("%s: read model %+v, replay %+v", id, gs, ws)
			}
		}
	}
	var total, lines, events int64
	for _, s := range want {
		total, lines, events = total+s.Total, lines+int64(s.Lines), events+s.Events
	}
	w.t.Logf("%d orders, %d events, %d lines, total %d; %d orders differ", len(want), events, lines, total, bad)
	if w.t.Failed() {
		w.t.Logf("instance output:\n%s", outputs(procs))
	}
}

// position is the stored position of an events partition (0: none).
func (w *world) position(part int32) int64 {
	var n int64
	_ = w.pool.QueryRow(context.Background(), `SELECT next_offset FROM chronicle_projection_positions WHERE projection = 'order_summaries' AND partition = $1`, part).Scan(&n)
	return n
}

// orderCreated returns the first event of order id.
func orderCreated(t *testing.T, id string) aggregates.Event {
	t.Helper()
	kind := order.Definition()
	cmd, err := kind.NewCommand(id, order.CreateOrder{UserID: "u"}, aggregates.Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := kind.New(id).Execute(&cmd, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return evs[0]
}

// start runs an ordersummary instance on the world's broker and database.
func (w *world) start(args ...string) *proctest.Process {
	w.t.Helper()
	cmd := exec.Command(binary, append([]string{"--batch", "40", "--session-timeout", "1s"}, args...)...)
	cmd.Env = append(os.Environ(), "CHRONICLE_BROKERS="+strings.Join(w.c.ListenAddrs(), ","), "DATABASE_URL="+w.dbURL)
	return proctest.Start(w.t, cmd)
}

// stop sends SIGTERM and expects a clean exit.
func stop(t *testing.T, p *proctest.Process) {
	t.Helper()
	if err := p.Stop(syscall.SIGTERM); err != nil {
		t.Errorf("the instance on SIGTERM: %v\n%s", err, p.Output())
	}
}

func outputs(procs []*proctest.Process) string {
	var b strings.Builder
	for i, p := range procs {
		fmt.Fprintf(&b, "--- instance %d:\n%s\n", i, p.Output())
	}
	return b.String()
}

// The projection runs as its own process and is SIGKILLed at several points
// mid-stream, while events keep arriving; after the last restart every
// order's summary equals a replay of its events: nothing applied twice,
// nothing skipped.
func TestKilledAndRestartedItAppliesEveryEventExactlyOnce(t *testing.T) {
	w := newWorld(t)
	w.writeOrders(4000)
	var procs []*proctest.Process
	for k := 1; k <= 5; k++ {
		p := w.start()
		procs = append(procs, p)
		w.waitApplied(int64(w.written*k/8), p)
		p.Kill(t)
		t.Logf("%s kill %d: %d of %d events applied", time.Now().Format("15:04:05.000"), k, w.applied(), w.written)
		if k == 2 {
			w.writeOrders(3000) // more events arrive while it is down
		}
	}
	p := w.start()
	procs = append(procs, p)
	w.waitApplied(int64(w.written), p)
	stop(t, p)
	w.check(procs...)
}

// Two instances share the partitions through the consumer group; one is
// killed mid-stream and comes back. Each event is applied once.
func TestTwoInstancesShareTheWorkAndSurviveAKill(t *testing.T) {
	w := newWorld(t)
	w.writeOrders(4000)
	a, b := w.start(), w.start()
	w.waitApplied(int64(w.written/3), a, b)
	a.Kill(t)
	w.writeOrders(3000)
	a2 := w.start()
	w.waitApplied(int64(w.written), a2, b)
	stop(t, a2)
	stop(t, b)
	w.check(a, b, a2)
}

// An event of a schema version this build cannot read stops the instance
// with the offset in its error; --skip-undecodable passes over it.
func TestAnUndecodableEventStopsItWithTheOffset(t *testing.T) {
	w := newWorld(t)
	e := orderCreated(t, "from-the-future")
	e.SchemaVersion = 99
	v, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	part := topics.NewOwner().Of([]byte(e.Subject), partitions)
	cl := kafkatest.Client(t, w.c, kgo.RecordPartitioner(topics.Partitioner()))
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topics.For("orders").Events, Partition: part, Key: topics.EventKey(e.Subject, 0), Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	w.writeOrders(50) // some behind it in its partition
	p := w.start()
	<-p.Exited()
	out := p.Output()
	if p.Err() == nil || !strings.Contains(out, fmt.Sprintf("orders.events/%d offset 0", part)) || !strings.Contains(out, "schema version 99") {
		t.Fatalf("exit %v, output:\n%s\nwant a failure naming offset 0 and schema version 99", p.Err(), out)
	}
	if got := w.position(part); got != 0 {
		t.Fatalf("position %d after the stop, want 0 (none, or at the undecodable event)", got)
	}
	p = w.start("--skip-undecodable")
	for w.position(part) < 1 {
		select {
		case <-p.Exited():
			t.Fatalf("exited (%v) before passing over the event:\n%s", p.Err(), p.Output())
		case <-time.After(10 * time.Millisecond):
		}
	}
	w.waitApplied(int64(w.written), p)
	stop(t, p)
	w.check(p)
	if !strings.Contains(p.Output(), "level=WARN") || !strings.Contains(p.Output(), "schema_version=99") {
		t.Errorf("no warning about the skipped event:\n%s", p.Output())
	}
}
