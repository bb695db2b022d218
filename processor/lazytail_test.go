package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/snapshots"
)

// A restore from a checkpoint defers the events after it (the tail) to the
// first use of each aggregate (aggState invariant 7). These tests leave a
// tail behind on purpose: a first processor checkpoints at shutdown, a
// second adds events and crashes before any checkpoint.

// tailEnv is a snapEnv whose partition has a checkpoint with five counters
// (c-0..c-4, created, c-0..c-3 at version 1) and a tail after it: one Add
// on each of c-0..c-3 (version 2) and the creation of c-5. tail is the
// command records of the tail, by counter.
type tailEnv struct {
	*snapEnv
	d    *decider
	tail map[string]*kgo.Record
}

func newTailEnv(t *testing.T) *tailEnv {
	t.Helper()
	e := &tailEnv{snapEnv: newSnapEnv(t, 1), tail: map[string]*kgo.Record{}}
	e.d = &decider{t: t, e: e.snapEnv}
	a := startProcessor(t, e.quiet(t, "tail-a"))
	for i := range 5 {
		e.d.want(command(t, e.kind, e.names.Commands, fmt.Sprintf("c-%d", i), createCounter{}, nil), aggregates.StatusAccepted, 0)
	}
	for i := range 4 {
		e.d.want(command(t, e.kind, e.names.Commands, fmt.Sprintf("c-%d", i), addCounter{N: 1}, nil), aggregates.StatusAccepted, 1)
	}
	a.stop(t) // the checkpoint, at shutdown
	if st := a.p.Stats(); st.Checkpoints == 0 {
		t.Fatalf("the first processor left no checkpoint: %+v", st)
	}
	b := startProcessor(t, e.quiet(t, "tail-b"))
	for i := range 4 {
		id := fmt.Sprintf("c-%d", i)
		e.tail[id] = command(t, e.kind, e.names.Commands, id, addCounter{N: 10}, nil)
		e.d.want(e.tail[id], aggregates.StatusAccepted, 2)
	}
	e.tail["c-5"] = command(t, e.kind, e.names.Commands, "c-5", createCounter{}, nil)
	e.d.want(e.tail["c-5"], aggregates.StatusAccepted, 0)
	b.kill(t) // no checkpoint: the five events stay after the checkpoint
	return e
}

// quiet is a config that checkpoints only at shutdown.
func (e *tailEnv) quiet(t *testing.T, txnID string) Config {
	cfg := e.config(t, txnID)
	cfg.CommitEvery = 1
	cfg.CheckpointEvents, cfg.CheckpointInterval = 1_000_000, time.Hour
	return cfg
}

// restored starts a processor and waits for its restore, which must be
// from the checkpoint with deferred aggregates deferred.
func (e *tailEnv) restored(t *testing.T, cfg Config, deferred int64) *running {
	t.Helper()
	r := startProcessor(t, cfg)
	waitStat(t, "restores", func() int64 { return r.p.Stats().Restores }, 1)
	if st := r.p.Stats(); st.CheckpointRestores != 1 || st.Deferred != deferred || st.DeferredLoaded != 0 {
		t.Fatalf("restore: %+v, want one from the checkpoint with %d aggregates deferred and none loaded yet", st, deferred)
	}
	return r
}

// resend sends rec's command again and returns its latest result.
func (e *tailEnv) resend(t *testing.T, rec *kgo.Record) aggregates.Result {
	t.Helper()
	produceAll(t, e.prod, []*kgo.Record{{Topic: rec.Topic, Key: rec.Key, Value: rec.Value}}) // a produced record keeps its context
	e.d.sent++
	e.d.resent = true
	res := waitResultsLatest(t, e.c, e.names.Results, e.d.sent, 60*time.Second, false)
	return res[mustDecode(t, rec.Value).ID.String()]
}

func TestCheckpointRestoreDecidesOnItsDeferredTail(t *testing.T) {
	e := newTailEnv(t)
	c := e.restored(t, e.quiet(t, "tail-c"), 5)
	// c-0's deferred Add is applied before the command is decided: the
	// next version is 3, and its value counts the deferred 10.
	e.d.want(command(t, e.kind, e.names.Commands, "c-0", addCounter{N: 1}, nil), aggregates.StatusAccepted, 3)
	// The tail's command on c-1 is known only from its deferred event's
	// causation id: sent again, it is a duplicate.
	if r := e.resend(t, e.tail["c-1"]); r.Status != aggregates.StatusDuplicate {
		t.Fatalf("the tail's command on c-1 sent again: %s at version %d (%s), want duplicate", r.Status, r.Version, r.Reason)
	}
	// c-5 exists only in the tail.
	if r := e.d.send(command(t, e.kind, e.names.Commands, "c-5", createCounter{}, nil)); r.Status != aggregates.StatusRejected || r.Code != "already_exists" {
		t.Fatalf("creating c-5 again: %s %s at version %d, want rejected already_exists", r.Status, r.Code, r.Version)
	}
	if st := c.p.Stats(); st.DeferredLoaded != 3 || st.FullReplays != 0 {
		t.Fatalf("after commands on c-0, c-1 and c-5: %+v, want 3 deferred aggregates loaded and no full replay", st)
	}
	// The shutdown checkpoint loads the two aggregates still deferred.
	c.stop(t)
	if st := c.p.Stats(); st.DeferredLoaded != 5 {
		t.Fatalf("after the shutdown checkpoint: %+v, want all 5 deferred aggregates loaded", st)
	}
	// The next restore starts from that checkpoint, with nothing after it.
	d := e.restored(t, e.config(t, "tail-d"), 0)
	if st := d.p.Stats(); st.EventsReplayed != 0 {
		t.Fatalf("the restore after the shutdown checkpoint read %d events after it: %+v", st.EventsReplayed, st)
	}
	for i, v := range []int64{4, 3, 3, 3, 1} {
		e.d.want(command(t, e.kind, e.names.Commands, fmt.Sprintf("c-%d", i), addCounter{N: 1}, nil), aggregates.StatusAccepted, v)
	}
	checkValues(t, e.snapEnv, map[string]int64{"c-0": 13, "c-1": 12, "c-2": 12, "c-3": 12, "c-4": 1, "c-5": 0})
}

// TestCheckpointRestoreKeepsItsTailWithTheUsersPools gives the processor's
// clients a pool of the user's (Config.KafkaOptions): the restore from the
// checkpoint must still keep the bytes of the events it defers, or the
// causation id of the tail's command on c-1 is gone by the time c-1 is
// loaded, and the command sent again is accepted twice.
func TestCheckpointRestoreKeepsItsTailWithTheUsersPools(t *testing.T) {
	e := newTailEnv(t)
	cfg := e.quiet(t, "tail-c")
	cfg.KafkaOptions = append(cfg.KafkaOptions, kgo.WithPools(new(fetchPool)))
	e.restored(t, cfg, 5)
	if r := e.resend(t, e.tail["c-1"]); r.Status != aggregates.StatusDuplicate {
		t.Fatalf("the tail's command on c-1 sent again: %s at version %d (%s), want duplicate", r.Status, r.Version, r.Reason)
	}
}

func TestCheckpointAfterACheckpointRestoreLoadsItsDeferredTail(t *testing.T) {
	e := newTailEnv(t)
	cfg := e.config(t, "tail-c")
	cfg.CheckpointInterval = 100 * time.Millisecond // due at once: the tail is not checkpointed
	c := startProcessor(t, cfg)
	waitStat(t, "checkpoints", func() int64 { return c.p.Stats().Checkpoints }, 1)
	if st := c.p.Stats(); st.Deferred != 5 || st.DeferredLoaded != 5 {
		t.Fatalf("after the first checkpoint: %+v, want the 5 deferred aggregates loaded", st)
	}
	c.kill(t) // no shutdown checkpoint: the next restore relies on the interval's
	d := e.restored(t, e.quiet(t, "tail-d"), 0)
	if st := d.p.Stats(); st.EventsReplayed != 0 {
		t.Fatalf("the restore read %d events after the checkpoint: %+v", st.EventsReplayed, st)
	}
	for i, v := range []int64{3, 3, 3, 3, 1, 1} {
		id := fmt.Sprintf("c-%d", i)
		e.d.want(command(t, e.kind, e.names.Commands, id, addCounter{N: 1}, nil), aggregates.StatusAccepted, v)
	}
	checkValues(t, e.snapEnv, map[string]int64{"c-0": 12, "c-1": 12, "c-2": 12, "c-3": 12, "c-4": 1, "c-5": 1})
}

// TestCheckpointsBetweenTransactionsLoadTheDeferredTailInSteps lets the
// main loop load at most two deferred aggregates per checkpoint: the five
// of the restore's tail come in over three calls, and the checkpoint is
// written only once all are loaded, so no call holds the loop for the
// whole tail.
func TestCheckpointsBetweenTransactionsLoadTheDeferredTailInSteps(t *testing.T) {
	e := newTailEnv(t)
	cfg := e.config(t, "tail-s")
	cfg.CheckpointInterval = 100 * time.Millisecond // due at once
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.materializeStep = 2
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	seen := map[int64]bool{}
	deadline := time.Now().Add(60 * time.Second)
	for p.Stats().Checkpoints == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint after 60s: %+v", p.Stats())
		}
		seen[p.Stats().DeferredLoaded] = true
		time.Sleep(2 * time.Millisecond)
	}
	st := p.Stats()
	if st.Deferred != 5 || st.DeferredLoaded != 5 {
		t.Fatalf("at the first checkpoint: %+v, want the 5 deferred aggregates loaded", st)
	}
	if !seen[2] || !seen[4] {
		t.Errorf("deferred aggregates loaded before the checkpoint, as seen: %v; want 2 and then 4 on the way to 5", seen)
	}
}

func TestStoreLostAfterACheckpointRestoreIsDetected(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, e *tailEnv)
		full int64 // full replays after it: a flush takes the checkpoint too
	}{
		{name: "flushed", lose: func(_ *testing.T, e *tailEnv) { e.redis.FlushAll() }, full: 1},
		{name: "claimed by another owner", lose: func(t *testing.T, e *tailEnv) {
			if _, _, err := e.store.Claim(context.Background(), e.kind.Name(), 0, "another-owner"); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTailEnv(t)
			c := e.restored(t, e.quiet(t, "tail-c"), 5)
			tc.lose(t, e)
			// c-4 is in the checkpoint's snapshots only; c-0 has a
			// deferred event. Neither may be decided on what the store
			// says now.
			if r := e.d.send(command(t, e.kind, e.names.Commands, "c-4", createCounter{}, nil)); r.Status != aggregates.StatusRejected || r.Code != "already_exists" {
				t.Fatalf("creating c-4 again: %s %s at version %d, want rejected already_exists", r.Status, r.Code, r.Version)
			}
			e.d.want(command(t, e.kind, e.names.Commands, "c-0", addCounter{N: 1}, nil), aggregates.StatusAccepted, 3)
			if st := c.p.Stats(); st.Restores != 2 || st.FullReplays != tc.full {
				t.Fatalf("after the store was %s: %+v, want a second restore, %d of them full replays", tc.name, st, tc.full)
			}
			checkValues(t, e.snapEnv, map[string]int64{"c-0": 12, "c-1": 11, "c-4": 0})
		})
	}
}

func TestStaleSnapshotFoundAtFirstUseMeansAFullReplay(t *testing.T) {
	for _, firstUse := range []string{"a command", "a checkpoint"} {
		t.Run(firstUse, func(t *testing.T) {
			e := staleTail(t)
			cfg := e.quiet(t, "stale-d")
			if firstUse == "a checkpoint" {
				cfg.CheckpointInterval = 50 * time.Millisecond
			}
			d := e.restored(t, cfg, 1)
			if firstUse == "a checkpoint" {
				// The checkpoint cannot load c-0: the partition is
				// restored with a full replay, not from the checkpoint
				// again (which would find the same stale snapshot).
				waitStat(t, "full replays", func() int64 { return d.p.Stats().FullReplays }, 1)
			}
			e.d.want(command(t, e.kind, e.names.Commands, "c-0", addCounter{N: 4}, nil), aggregates.StatusAccepted, 3)
			if st := d.p.Stats(); st.FullReplays != 1 || st.CheckpointRestores != 1 || st.Fallbacks != 1 {
				t.Fatalf("after a stale snapshot found at first use: %+v, want one full replay after the checkpoint restore, counted as a fallback", st)
			}
			e.d.want(command(t, e.kind, e.names.Commands, "c-1", addCounter{N: 1}, nil), aggregates.StatusAccepted, 1)
			checkValues(t, e.snapEnv, map[string]int64{"c-0": 7, "c-1": 1})
		})
	}
}

// staleTail leaves a checkpoint with c-0 at version 1 and c-1 at version 0,
// c-0's version 2 after it, and c-0's snapshot in the store set back to
// version 0 behind the lease's back: version 1 is in neither the snapshot
// nor the tail.
// TestStaleSnapshotFoundByAShutdownIsNoFallback stops a processor whose
// checkpoint restore deferred an aggregate with a stale snapshot: its
// shutdown checkpoint finds the snapshot stale and skips, but no full
// replay follows on this instance, so it is no fallback.
func TestStaleSnapshotFoundByAShutdownIsNoFallback(t *testing.T) {
	e := staleTail(t)
	d := e.restored(t, e.quiet(t, "stale-s"), 1)
	d.stop(t)
	if st := d.p.Stats(); st.Fallbacks != 0 || st.FullReplays != 0 {
		t.Errorf("after a shutdown that found a stale snapshot: %+v, want no fallback and no full replay", st)
	}
}

func staleTail(t *testing.T) *tailEnv {
	t.Helper()
	e := &tailEnv{snapEnv: newSnapEnv(t, 1), tail: map[string]*kgo.Record{}}
	e.d = &decider{t: t, e: e.snapEnv}
	ctx := context.Background()
	rc := e.redisClient(t)
	a := startProcessor(t, e.quiet(t, "stale-a"))
	e.d.want(command(t, e.kind, e.names.Commands, "c-0", createCounter{}, nil), aggregates.StatusAccepted, 0)
	e.d.want(command(t, e.kind, e.names.Commands, "c-1", createCounter{}, nil), aggregates.StatusAccepted, 0)
	a.stop(t)
	keys, err := rc.Keys(ctx, "*:s:c-0").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("the snapshot key of c-0: %v %v", keys, err)
	}
	old, err := rc.Get(ctx, keys[0]).Result() // c-0 at version 0
	if err != nil {
		t.Fatal(err)
	}
	b := startProcessor(t, e.quiet(t, "stale-b"))
	e.d.want(command(t, e.kind, e.names.Commands, "c-0", addCounter{N: 1}, nil), aggregates.StatusAccepted, 1)
	b.stop(t) // a checkpoint at c-0 version 1
	c := startProcessor(t, e.quiet(t, "stale-c"))
	e.d.want(command(t, e.kind, e.names.Commands, "c-0", addCounter{N: 2}, nil), aggregates.StatusAccepted, 2)
	c.kill(t) // version 2 stays after the checkpoint
	if err := rc.Set(ctx, keys[0], old, 0).Err(); err != nil {
		t.Fatal(err)
	}
	return e
}

// checkValues checks, from the events topic, the value of each counter.
func checkValues(t *testing.T, e *snapEnv, want map[string]int64) {
	t.Helper()
	events := eventsByAggregate(t, e.c, e.kind, e.names.Events, 1)
	for id, v := range want {
		a := e.kind.New(id)
		if err := a.Load(events[id]); err != nil || a.State().Value != v {
			t.Errorf("%s: value %d (err %v), want %d", id, a.State().Value, err, v)
		}
	}
}

// deferredTail is one partition's aggState restored from a checkpoint at
// offset 2 of a log with three events of c-0 (created, added 1, added 13),
// whose snapshot in the store is at version stored: version 1 is a snapshot
// that holds everything below the checkpoint, version 0 a stale one.
func deferredTail(t *testing.T, restoreKind *aggregates.Definition[counterState], stored int64) (*aggState, *memLog, *writer) {
	t.Helper()
	ctx := context.Background()
	kind := counterKind()
	root := kind.New("c-0")
	log := &memLog{}
	var snap snapshots.Snapshot
	for i, payload := range []any{createCounter{}, addCounter{N: 1}, addCounter{N: 13}} {
		cmd, err := kind.NewCommand("c-0", payload, aggregates.Metadata{})
		if err != nil {
			t.Fatal(err)
		}
		d, err := root.ExecuteEncoded(&cmd, time.Unix(1_700_000_000, 0))
		if err != nil {
			t.Fatal(err)
		}
		root.ClearChanges()
		log.recs = append(log.recs, rawEvent{offset: int64(i), value: d.Encoded[0]})
		if int64(i) == stored {
			data, err := root.MarshalSnapshot()
			if err != nil {
				t.Fatal(err)
			}
			snap = snapshots.Snapshot{AggregateID: "c-0", Version: stored, Offset: int64(i), Stamp: kind.StateStamp(), Data: data}
		}
	}
	store := snapshots.NewMemory()
	cp := &snapshots.Checkpoint{Offset: 2, Stamp: kind.StateStamp() + " topic t", Time: time.Now()}
	if err := store.Save(ctx, kind.Name(), 0, cp, []snapshots.Snapshot{snap}); err != nil {
		t.Fatal(err)
	}
	w := newWriter(store, slog.New(slog.DiscardHandler), &counters{})
	st := newAggState(restoreKind, 0, store, w, 10, slog.New(slog.DiscardHandler), &counters{}, "t")
	st.retries = nil
	rep, err := st.restore(ctx, log, log.end(), false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.from != 2 || rep.deferred != 1 || len(st.pending["c-0"]) != 1 {
		t.Fatalf("restore %+v with %d deferred events of c-0, want one deferred from the checkpoint at 2", rep, len(st.pending["c-0"]))
	}
	return st, log, w
}

// A checkpoint that cannot load a deferred aggregate (its snapshot is stale,
// or its deferred event cannot be applied) takes no checkpoint, leaves the
// aggregate deferred, and marks the store untrusted, so the partition is
// restored with a full replay; the full replay stops at an event the code
// cannot apply.
func TestCheckpointThatCannotLoadADeferredAggregate(t *testing.T) {
	// Applying N=13 panics in this kind: its events decode, but one cannot
	// be applied.
	panicky := aggregates.MustDefine("counter",
		aggregates.When("Created", func(s *counterState, _ counterCreated) { s.Exists = true }),
		aggregates.When("Added", func(s *counterState, e counterAdded) {
			if e.N == 13 {
				panic("13")
			}
			s.Value += e.N
		}),
		aggregates.Handle("Create", func(counterState, createCounter) ([]any, error) { return []any{counterCreated{}}, nil }),
	)
	for _, tc := range []struct {
		name   string
		kind   *aggregates.Definition[counterState]
		stored int64
		full   func(t *testing.T, st *aggState, err error)
	}{
		{name: "a stale snapshot", kind: counterKind(), stored: 0, full: func(t *testing.T, st *aggState, err error) {
			if err != nil {
				t.Fatalf("full replay: %v", err)
			}
			e, err := st.get(context.Background(), "c-0")
			if err != nil || e.agg.Version() != 2 || e.agg.StateAny().(counterState).Value != 14 {
				t.Fatalf("after the full replay c-0 is %+v (err %v), want version 2, value 14", e, err)
			}
		}},
		{name: "an event that cannot be applied", kind: panicky, stored: 1, full: func(t *testing.T, _ *aggState, err error) {
			var stop *StoppedError
			if !errors.As(err, &stop) || stop.Offset != 2 {
				t.Fatalf("full replay: %v, want a *StoppedError at offset 2", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, log, w := deferredTail(t, tc.kind, tc.stored)
			st.checkpoint()
			if err := st.lostErr(); !errors.Is(err, errUntrusted) {
				t.Fatalf("after the checkpoint the store is trusted (lost: %v)", err)
			}
			if w.pending() != 0 || len(st.pending["c-0"]) != 1 || st.cache.entries["c-0"] != nil {
				t.Fatalf("the checkpoint went on: %d writer jobs, %d deferred events of c-0, c-0 in memory: %v",
					w.pending(), len(st.pending["c-0"]), st.cache.entries["c-0"] != nil)
			}
			if _, err := st.get(context.Background(), "c-0"); !errors.Is(err, errUntrusted) {
				t.Fatalf("get after the checkpoint failed: %v, want errUntrusted", err)
			}
			// What the processor does then: a restore with a full replay.
			_, err := st.restore(context.Background(), log, log.end(), true)
			tc.full(t, st, err)
		})
	}
}

// hangingStore is a snapshot store whose reads hang until their context
// ends, as a Redis that stopped answering.
type hangingStore struct{ SnapshotStore }

func (hangingStore) LoadLeased(ctx context.Context, _ string, _ int32, _ snapshots.Lease, _ []string) (map[string]snapshots.Snapshot, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// A shutdown bounds the loads its checkpoints make of deferred aggregates by
// its own timeout: checkpointWithin returns once its context ends, takes no
// checkpoint, and leaves the aggregate deferred.
func TestCheckpointWithinEndsWithItsContext(t *testing.T) {
	st, _, _ := deferredTail(t, counterKind(), 1)
	st.store = hangingStore{st.store}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.checkpointWithin(ctx)
	}()
	select {
	case <-done:
	case <-time.After(materializeTimeout / 2):
		t.Fatalf("checkpointWithin still loads %s after its context ended", materializeTimeout/2)
	}
	if len(st.pending["c-0"]) != 1 || st.lostErr() != nil {
		t.Fatalf("after a checkpoint the store never answered: %d deferred events of c-0 (want 1), lost %v (want nil)", len(st.pending["c-0"]), st.lostErr())
	}
}
