package processor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"pgregory.net/rapid"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/internal/redistest"
	"github.com/chronicle-es/chronicle/snapshots"
)

// memLog is a committed events partition held in memory: the model's
// source of truth, as Kafka is the processor's.
type memLog struct{ recs []rawEvent }

func (l *memLog) name() string { return "model-events/0" }

func (l *memLog) topic() string { return "model-events" }

// read hands out the records in batches of up to three (so eviction
// happens mid-restore), leaving out commit markers (nil values), as a
// read_committed Kafka consumer does.
func (l *memLog) read(_ context.Context, from, end int64, keep bool, fn func([]rawEvent) error) error {
	for off := from; off < end; off += 3 {
		var batch []rawEvent
		for _, r := range l.recs[off:min(off+3, end)] {
			if r.value != nil {
				batch = append(batch, rawEvent{offset: r.offset, value: bytes.Clone(r.value)})
			}
		}
		if len(batch) == 0 {
			continue
		}
		err := fn(batch)
		if !keep {
			// A value is valid only until fn returns: the restore client
			// recycles its fetch buffers, zeroed.
			for _, r := range batch {
				clear(r.value)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (l *memLog) end() int64 { return int64(len(l.recs)) }

// faultyStore puts a snapshot store behind every fault Redis can show:
// flushed, rolled back to an older copy (memory only), refusing writes while
// reads work, down, slow (a write that times out for its caller but lands
// later), and written by another owner. On a real redis-server, flush is
// FLUSHALL and read-only is maxmemory under noeviction, so the server itself
// refuses; the other faults are injected here.
type faultyStore struct {
	inner      SnapshotStore
	mem        *snapshots.Memory   // the memory store, nil on Redis
	copies     []*snapshots.Memory // earlier copies of mem, to roll back to
	flush      func()
	setOOM     func(on bool) // nil: read-only is emulated
	down       bool
	readOnly   bool // OOM or a read-only replica: writes fail, reads work
	slow       bool // writes time out for the caller and land later
	late       []func()
	lateWrites int
}

var errFault = errors.New("injected store fault")

func (f *faultyStore) refusesWrites() bool { return f.down || (f.readOnly && f.setOOM == nil) }

func (f *faultyStore) Claim(ctx context.Context, aggType string, part int32, epoch string) (snapshots.Checkpoint, bool, error) {
	if f.refusesWrites() {
		return snapshots.Checkpoint{}, false, errFault
	}
	return f.inner.Claim(ctx, aggType, part, epoch)
}

func (f *faultyStore) LoadLeased(ctx context.Context, aggType string, part int32, l snapshots.Lease, ids []string) (map[string]snapshots.Snapshot, error) {
	if f.down {
		return nil, errFault
	}
	return f.inner.LoadLeased(ctx, aggType, part, l, ids)
}

func (f *faultyStore) SaveLeased(ctx context.Context, aggType string, part int32, l snapshots.Lease, cp *snapshots.Checkpoint, snaps []snapshots.Snapshot) (snapshots.Lease, error) {
	if f.refusesWrites() {
		return snapshots.Lease{}, errFault
	}
	if f.slow {
		snaps = append([]snapshots.Snapshot(nil), snaps...)
		f.late = append(f.late, func() {
			if _, err := f.inner.SaveLeased(context.Background(), aggType, part, l, cp, snaps); err == nil {
				f.lateWrites++
			}
		})
		return snapshots.Lease{}, fmt.Errorf("%w: timed out (the write lands later)", errFault)
	}
	return f.inner.SaveLeased(ctx, aggType, part, l, cp, snaps)
}

func (f *faultyStore) DropPartition(ctx context.Context, aggType string, part int32) error {
	if f.down {
		return errFault
	}
	return f.inner.DropPartition(ctx, aggType, part)
}

// memoryFaults is a faultyStore over snapshots.Memory.
func memoryFaults() *faultyStore {
	f := &faultyStore{mem: snapshots.NewMemory()}
	f.inner = f.mem
	f.flush = func() { f.mem.Flush() }
	return f
}

// stateModel drives one partition's aggState through commands, commits,
// aborts, checkpoints, evictions, writer steps, restores and store faults,
// and checks every aggregate the state hands out against a replay of the
// committed log.
type stateModel struct {
	t       *rapid.T
	kind    *aggregates.Definition[counterState]
	topicID string // the events topic's incarnation
	log     memLog
	store   *faultyStore
	writer  *writer
	stats   *counters
	st      *aggState
	ids     []string
	now     time.Time

	restores, stale int
	materialized    int  // checkpoints that loaded the deferred tail of a restore
	stepped         int  // checkpointSteps that loaded part of it and left the rest
	step            int  // the state's materializeStep
	interrupt       bool // the next restore's first attempt fails midway
	forceFull       bool // the next restore replays everything, as the processor's after errUntrusted
}

// failingLog hands out the first batch of the log, lets the writer work,
// then fails, as a Kafka read that breaks during a restore.
type failingLog struct {
	log *memLog
	m   *stateModel
}

func (f *failingLog) name() string { return f.log.name() }

func (f *failingLog) topic() string { return f.log.topic() }

var errReadFailed = errors.New("injected read failure")

func (f *failingLog) read(ctx context.Context, from, end int64, keep bool, fn func([]rawEvent) error) error {
	n := 0
	err := f.log.read(ctx, from, end, keep, func(recs []rawEvent) error {
		if n++; n > 1 {
			return errReadFailed
		}
		if err := fn(recs); err != nil {
			return err
		}
		f.m.writer.step(ctx)
		f.m.writer.step(ctx)
		return nil
	})
	if err == nil && n <= 1 {
		return nil
	}
	return err
}

func newStateModel(t *rapid.T, store *faultyStore) *stateModel {
	m := &stateModel{t: t, kind: counterKind(), store: store, stats: &counters{},
		ids: []string{"c-0", "c-1", "c-2", "c-3", "c-4", "c-5", "c-6", "c-7"}, now: time.Unix(1_700_000_000, 0)}
	m.topicID = "topic-1"
	m.writer = newWriter(m.store, slog.New(slog.DiscardHandler), m.stats)
	m.writer.batch = 2 // saves of a checkpoint come in several batches
	// The deferred tail is loaded one (most often), two or up to 512
	// aggregates per checkpointStep.
	m.step = rapid.SampledFrom([]int{1, 1, 2, materializeBatch}).Draw(t, "materialize-step")
	m.restore()
	return m
}

// replayOf returns the committed state of id, from the log.
func (m *stateModel) replayOf(id string) *aggregates.Root[counterState] {
	a := m.kind.New(id)
	for _, r := range m.log.recs {
		if r.value == nil {
			continue // a commit marker
		}
		e, err := m.kind.DecodeEvent(r.value)
		if err != nil {
			m.t.Fatalf("decoding the log at %d: %v", r.offset, err)
		}
		if e.Subject == id {
			if err := a.Apply(&e); err != nil {
				m.t.Fatalf("replaying %s: %v", id, err)
			}
		}
	}
	return a
}

// restore replaces the state by a new one restored from the log and the
// store, as a reset or another instance taking over does. The old state is
// closed; its queued writes stay with the writer.
func (m *stateModel) restore() {
	if m.st != nil {
		m.st.closed.Store(true)
	}
	m.st = newAggState(m.kind, 0, m.store, m.writer, 3, slog.New(slog.DiscardHandler), m.stats, m.topicID)
	m.st.retries = nil // the model's faults last until an action ends them
	m.st.materializeStep = m.step
	full := m.forceFull
	m.forceFull = false
	if m.interrupt {
		// A first attempt fails midway, with the writer busy in between;
		// the retry runs on the same state, as the processor's does.
		m.interrupt = false
		// (A restore with at most one batch to read succeeds.)
		m.st.restore(context.Background(), &failingLog{log: &m.log, m: m}, m.log.end(), full)
	}
	for attempt := 0; ; attempt++ {
		_, err := m.st.restore(context.Background(), &m.log, m.log.end(), full)
		if err == nil {
			break
		}
		if errors.Is(err, errStopped) || attempt > 3 {
			m.t.Fatalf("restore: %v", err)
		}
		full = true // as the processor does after errUntrusted
	}
	m.restores++
}

// get asks the state for id and checks it against the log; ok is false
// when the state could not answer (the processor then aborts and restores).
func (m *stateModel) get(id string) (*entry, bool) {
	e, err := m.st.get(context.Background(), id)
	if err != nil {
		m.forceFull = errors.Is(err, errUntrusted)
		m.restore()
		return nil, false
	}
	want := m.replayOf(id)
	if e.agg.Version() != want.Version() || e.agg.StateAny().(counterState) != want.State() {
		m.t.Fatalf("state handed out %q at version %d %+v; the committed log says version %d %+v",
			id, e.agg.Version(), e.agg.StateAny(), want.Version(), want.State())
	}
	// The ids of the commands it recently applied too: they tell a
	// command sent again from a new one.
	got, err := e.agg.MarshalSnapshot()
	if err != nil {
		m.t.Fatal(err)
	}
	if exp, _ := want.MarshalSnapshot(); !bytes.Equal(got, exp) {
		m.t.Fatalf("state handed out %q as %s; the committed log says %s", id, got, exp)
	}
	return e, true
}

// checkpoint checkpoints the state, which loads the aggregates a restore
// from a checkpoint deferred; then every aggregate in memory is checked.
func (m *stateModel) checkpoint(*rapid.T) { m.checkpointWith(m.st.checkpoint) }

// checkpointStep is the main loop's checkpoint between transactions: it
// loads at most m.step deferred aggregates, and checkpoints only once none
// is left.
func (m *stateModel) checkpointStep(*rapid.T) { m.checkpointWith(m.st.checkpointStep) }

func (m *stateModel) checkpointWith(checkpoint func()) {
	deferred := len(m.st.pending)
	checkpoint()
	if deferred > 0 && len(m.st.pending) == 0 {
		m.materialized++
	}
	if left := len(m.st.pending); left > 0 && left < deferred {
		m.stepped++
	}
	for id := range m.st.cache.entries {
		m.get(id)
	}
}

// landLate applies the oldest write that timed out for its caller.
func (m *stateModel) landLate(*rapid.T) {
	if len(m.store.late) > 0 {
		m.store.late[0]()
		m.store.late = m.store.late[1:]
	}
}

// command decides one command on id and commits or aborts it.
func (m *stateModel) command(t *rapid.T) { m.commandOn(t, rapid.SampledFrom(m.ids).Draw(t, "id")) }

// commandOn is command on aggregate id.
func (m *stateModel) commandOn(t *rapid.T, id string) {
	e, ok := m.get(id)
	if !ok {
		return
	}
	var payload any = addCounter{N: int64(rapid.IntRange(1, 3).Draw(t, "n"))}
	if e.agg.Version() < 0 {
		payload = createCounter{}
	}
	cmd, err := m.kind.NewCommand(id, payload, aggregates.Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	m.now = m.now.Add(time.Millisecond)
	events, err := e.agg.Execute(&cmd, m.now)
	e.agg.ClearChanges()
	if err != nil {
		t.Fatalf("executing %T on %s: %v", payload, id, err)
	}
	var recs []rawEvent
	for i := range events {
		v, err := events[i].Encode()
		if err != nil {
			t.Fatal(err)
		}
		off := m.log.end() + int64(len(recs))
		recs = append(recs, rawEvent{offset: off, value: v})
		m.st.changed(id, &kgo.Record{Offset: off}, []byte("state"))
	}
	if rapid.IntRange(0, 19).Draw(t, "abort") == 0 {
		// Aborted: the records and the abort marker take offsets, but a
		// read_committed reader never sees them.
		for range len(recs) + 1 {
			m.log.recs = append(m.log.recs, rawEvent{offset: m.log.end()})
		}
		m.restore()
		return
	}
	m.log.recs = append(m.log.recs, recs...)
	m.log.recs = append(m.log.recs, rawEvent{offset: m.log.end()}) // the commit marker
	if err := m.st.committed(); err != nil {
		t.Fatalf("committed: %v", err)
	}
	m.st.evict()
	if err := m.st.lostErr(); err != nil {
		m.forceFull = errors.Is(err, errUntrusted)
		m.restore()
	}
}

func TestStateMatchesTheLogUnderStoreFaults(t *testing.T) {
	// Five rounds of the default 100 checks: some forks need a few hundred
	// runs to show.
	var deferred, loaded, materialized, stepped int64
	for range 5 {
		rapid.Check(t, func(t *rapid.T) {
			m := runStateModel(t, memoryFaults(), 50, 300)
			deferred += m.stats.deferred.Load()
			loaded += m.stats.deferredLoaded.Load()
			materialized += int64(m.materialized)
			stepped += int64(m.stepped)
		})
	}
	// The model must reach the deferred tail: restores from a checkpoint
	// with events after it, then lookups and checkpoints of those
	// aggregates, some of them loading it a part at a time.
	if deferred == 0 || loaded == 0 || materialized == 0 || stepped == 0 {
		t.Errorf("the runs deferred %d aggregates, loaded %d of them, %d checkpoints materialized a deferred tail and %d steps loaded part of one; the model must exercise all four",
			deferred, loaded, materialized, stepped)
	}
	t.Logf("deferred %d aggregates, loaded %d, %d checkpoints materialized a deferred tail, %d steps part of one", deferred, loaded, materialized, stepped)
}

// TestStateMatchesTheLogUnderRedisFaults runs the model on a real
// redis-server, which flushes and refuses writes (maxmemory) itself.
func TestStateMatchesTheLogUnderRedisFaults(t *testing.T) {
	srv := redistest.Start(t)
	rs, err := snapshots.Open(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: srv.Password()})
	t.Cleanup(func() { rc.Close() })
	ctx := context.Background()
	oom := func(on bool) {
		limit := "0"
		if on {
			limit = "1"
		}
		if err := rc.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
			t.Fatal(err)
		}
		if err := rc.ConfigSet(ctx, "maxmemory", limit).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rapid.Check(t, func(rt *rapid.T) {
		oom(false)
		srv.FlushAll()
		f := &faultyStore{inner: rs, flush: srv.FlushAll, setOOM: oom}
		runStateModel(rt, f, 20, 80)
		oom(false)
	})
}

// runStateModel draws between minSteps and maxSteps actions, then heals the
// store and checks every aggregate, also after one more restore (and a
// checkpoint and restore from it). It returns the model, for what its runs
// covered.
func runStateModel(t *rapid.T, store *faultyStore, minSteps, maxSteps int) *stateModel {
	m := newStateModel(t, store)
	actions := map[string]func(*rapid.T){
		"command":    m.command,
		"command2":   m.command,
		"command3":   m.command,
		"check":      func(t *rapid.T) { m.get(rapid.SampledFrom(m.ids).Draw(t, "id")) },
		"checkpoint": m.checkpoint,
		"step":       m.checkpointStep,
		"step2":      m.checkpointStep,
		"step3":      m.checkpointStep,
		"evict":      func(*rapid.T) { m.st.evict() },
		"write":      func(*rapid.T) { m.writer.step(context.Background()) },
		"write2":     func(*rapid.T) { m.writer.step(context.Background()) },
		"settle": func(*rapid.T) {
			if err := m.st.lostErr(); err != nil {
				m.forceFull = errors.Is(err, errUntrusted)
				m.restore()
			}
		},
		"rebalance": func(*rapid.T) { m.restore() },
		"restore-retried": func(*rapid.T) {
			m.interrupt = true
			m.restore()
		},
		// A rolling deploy of a new state schema, and its rollback.
		"deploy-v2": func(*rapid.T) {
			if m.kind.StateStamp() == counterKind().StateStamp() {
				m.kind = counterKindSchema(2)
			} else {
				m.kind = counterKind()
			}
			m.restore()
		},
		// The events topic is deleted and created again; the store keeps
		// what it had.
		"recreate-topic": func(t *rapid.T) {
			if rapid.IntRange(0, 3).Draw(t, "really") == 0 {
				m.log = memLog{}
				m.topicID = fmt.Sprintf("topic-%d", m.restores+2)
				m.restore()
			}
		},
		"flush": func(*rapid.T) { m.store.flush() },
		"down":  func(*rapid.T) { m.store.down = !m.store.down },
		"read-only": func(*rapid.T) {
			m.store.readOnly = !m.store.readOnly
			if m.store.setOOM != nil {
				m.store.setOOM(m.store.readOnly)
			}
		},
		"slow":       func(*rapid.T) { m.store.slow = !m.store.slow },
		"land-late":  m.landLate,
		"land-late2": m.landLate,
		"foreign-claim": func(*rapid.T) {
			m.store.inner.Claim(context.Background(), m.kind.Name(), 0, fmt.Sprintf("foreign-%d", m.restores))
		},
	}
	if m.store.mem != nil {
		actions["copy"] = func(*rapid.T) { m.store.copies = append(m.store.copies, m.store.mem.Copy()) }
		actions["rollback"] = func(t *rapid.T) {
			if len(m.store.copies) > 0 {
				m.store.mem = m.store.copies[rapid.IntRange(0, len(m.store.copies)-1).Draw(t, "copy")].Copy()
				m.store.inner = m.store.mem
			}
		}
	}
	names := make([]string, 0, len(actions))
	for n := range actions {
		names = append(names, n)
	}
	slices.Sort(names)
	steps := rapid.IntRange(minSteps, maxSteps).Draw(t, "steps")
	for range steps {
		actions[rapid.SampledFrom(names).Draw(t, "action")](t)
	}
	// Heal the store, let the writer finish, and check every aggregate once
	// more, also after one more restore from what the store holds.
	m.store.down, m.store.slow = false, false
	if m.store.readOnly && m.store.setOOM != nil {
		m.store.setOOM(false)
	}
	m.store.readOnly = false
	for i := 0; i < 50 && m.writer.pending() > 0; i++ {
		m.writer.step(context.Background())
	}
	for _, id := range m.ids {
		m.get(id)
	}
	m.restore()
	if rapid.Bool().Draw(t, "checkpoint-after-restore") {
		// The checkpoint loads the restore's deferred aggregates, at once or
		// a step at a time as the main loop does; the next restore starts
		// from it.
		if rapid.Bool().Draw(t, "in-steps") {
			// Commands on several aggregates after a checkpoint, so that
			// the restore defers several of them.
			m.checkpoint(t)
			for i := 0; i < 50 && m.writer.pending() > 0; i++ {
				m.writer.step(context.Background())
			}
			for _, id := range m.ids[:4] {
				m.commandOn(t, id)
			}
			m.restore()
			for i := 0; i < 20 && len(m.st.pending) > 0; i++ {
				m.checkpointStep(t)
				// What a step stored must restore every aggregate right.
				for j := 0; j < 50 && m.writer.pending() > 0; j++ {
					m.writer.step(context.Background())
				}
				if rapid.IntRange(0, 3).Draw(t, "restore-between-steps") == 0 {
					m.restore()
					for _, id := range m.ids {
						m.get(id)
					}
				}
			}
		}
		m.checkpoint(t)
		for i := 0; i < 50 && m.writer.pending() > 0; i++ {
			m.writer.step(context.Background())
		}
		m.restore()
	}
	for _, id := range m.ids {
		m.get(id)
	}
	return m
}
