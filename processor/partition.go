package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/snapshots"
	"github.com/chronicle-es/chronicle/topics"
)

// Header names on DLQ and forwarded records.
const (
	HeaderError         = "chronicle-error"
	HeaderCode          = "chronicle-code"
	HeaderSourceTopic   = "chronicle-source-topic"
	HeaderSourcePart    = "chronicle-source-partition"
	HeaderSourceOffset  = "chronicle-source-offset"
	HeaderCommandID     = "chronicle-command-id"
	HeaderForwardedFrom = "chronicle-forwarded-from"
)

// partition is one assigned commands partition and the aggregates it owns.
// Only one goroutine uses it at a time: its restore, then one worker per
// batch, then the main loop between transactions.
type partition struct {
	b        *binding
	id       int32
	restored atomic.Bool
	done     chan struct{} // closed when the partition is revoked or reset
	once     sync.Once

	cache *cache
	// dirty are the aggregates changed in the open transaction (their state
	// records are produced once per batch); events are the event records
	// produced in it, whose offsets are known once it commits.
	dirty  map[string]aggregates.Aggregate
	events []producedEvent

	// Snapshot bookkeeping, used when Config.Snapshots is set.
	complete      bool                // every aggregate is in memory: a miss is a new aggregate
	changed       map[string]struct{} // committed changes not yet in a snapshot
	eventsSinceCP int
	lastCP        time.Time
	nextOffset    int64       // events offset after the last committed event
	cpExpected    atomic.Bool // the store should hold a checkpoint of ours
	storeLost     atomic.Bool // the store lost it: restore with a full replay
	forceFull     bool        // the next restore must replay everything
	verifyCP      bool        // a "no snapshot" answer was trusted in the open transaction
	mu            sync.Mutex  // guards unsaved
	unsaved       map[string]*entry
}

type producedEvent struct {
	id  string
	rec *kgo.Record
}

func newPartition(b *binding, id int32) *partition {
	return &partition{b: b, id: id, done: make(chan struct{}), cache: newCache(),
		dirty: map[string]aggregates.Aggregate{}, changed: map[string]struct{}{},
		unsaved: map[string]*entry{}, lastCP: time.Now()}
}

func (pt *partition) isRestored() bool { return pt.restored.Load() }

func (pt *partition) close() { pt.once.Do(func() { close(pt.done) }) }

func (pt *partition) isClosed() bool {
	select {
	case <-pt.done:
		return true
	default:
		return false
	}
}

// committed is called after the transaction that touched the partition
// committed: the produced events now have offsets.
func (pt *partition) committed() {
	for _, pe := range pt.events {
		if e := pt.lookup(pe.id); e != nil && pe.rec.Offset > e.offset {
			e.offset = pe.rec.Offset
		}
		pt.nextOffset = max(pt.nextOffset, pe.rec.Offset+1)
		pt.changed[pe.id] = struct{}{}
		pt.eventsSinceCP++
	}
	clear(pt.events)
	pt.events = pt.events[:0]
	clear(pt.dirty)
}

// lookup finds a cached or evicted-but-unsaved aggregate without loading.
func (pt *partition) lookup(id string) *entry {
	if e := pt.cache.entries[id]; e != nil {
		return e
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.unsaved[id]
}

// saved is called by the writer once snaps are stored: evicted aggregates
// whose snapshot is now in the store can be forgotten.
func (pt *partition) saved(snaps []snapshots.Snapshot) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	for _, s := range snaps {
		if e := pt.unsaved[s.AggregateID]; e != nil && e.agg.Version() <= s.Version {
			delete(pt.unsaved, s.AggregateID)
		}
	}
}

// prefetch loads, with one LoadMany, the aggregates the records address
// that are not in memory. An aggregate the store has no snapshot of is new,
// provided the store still holds the partition's checkpoint when the
// transaction ends (verifyCheckpoint).
func (pt *partition) prefetch(ctx context.Context, p *Processor, recs []*kgo.Record) error {
	if p.cfg.Snapshots == nil || pt.complete {
		return nil
	}
	var missing []string
	seen := map[string]bool{}
	for _, r := range recs {
		id := string(r.Key)
		if id == "" || seen[id] || pt.fromMemory(id) != nil {
			continue
		}
		seen[id] = true
		missing = append(missing, id)
	}
	created, err := pt.loadMany(ctx, p, missing)
	if created {
		pt.verifyCP = true
	}
	return err
}

// fromMemory returns the cached aggregate id, or the evicted one still being
// written (moving it back into the cache), or nil.
func (pt *partition) fromMemory(id string) *entry {
	if e := pt.cache.get(id); e != nil {
		return e
	}
	pt.mu.Lock()
	e := pt.unsaved[id]
	delete(pt.unsaved, id)
	pt.mu.Unlock()
	if e == nil {
		return nil
	}
	return pt.cache.put(e.agg, e.offset)
}

// loadMany brings ids into the cache from the snapshot store with one
// LoadMany; an id the store has no snapshot of becomes a new aggregate, and
// created says whether that happened. A corrupt or foreign snapshot is
// errUntrusted.
func (pt *partition) loadMany(ctx context.Context, p *Processor, ids []string) (created bool, err error) {
	if len(ids) == 0 {
		return false, nil
	}
	p.stats.snapshotLoads.Add(int64(len(ids)))
	snaps, err := p.cfg.Snapshots.LoadMany(ctx, pt.b.kind.Name(), pt.id, ids)
	if err != nil {
		if errors.Is(err, snapshots.ErrCorrupt) {
			return false, fmt.Errorf("%w: %w", errUntrusted, err)
		}
		return false, fmt.Errorf("loading %d snapshots: %w", len(ids), err)
	}
	for _, id := range ids {
		s, ok := snaps[id]
		if !ok {
			pt.cache.put(pt.b.kind.NewAggregate(id), -1)
			created = true
			continue
		}
		a, err := p.fromSnapshot(pt, s)
		if err != nil {
			return created, err
		}
		pt.cache.put(a, s.Offset)
	}
	return created, nil
}

// verifyCheckpoint is called before the transaction commits: if aggregates
// were taken as new because the store had no snapshot of them, the store
// must still hold the checkpoint promising it would have one. Otherwise it
// was flushed, and the partition is restored from Kafka.
func (pt *partition) verifyCheckpoint(ctx context.Context, p *Processor) error {
	if !pt.verifyCP || !pt.cpExpected.Load() {
		pt.verifyCP = false
		return nil
	}
	pt.verifyCP = false
	_, ok, err := p.cfg.Snapshots.Checkpoint(ctx, pt.b.kind.Name(), pt.id)
	if err != nil {
		return fmt.Errorf("reading checkpoint: %w", err)
	}
	if !ok {
		pt.forceFull = true
		return fmt.Errorf("%w: the checkpoint of partition %d vanished (store flushed?)", errUntrusted, pt.id)
	}
	return nil
}

// aggregate returns the aggregate id: from memory, from the snapshot store,
// or new.
func (pt *partition) aggregate(ctx context.Context, p *Processor, id string) (*entry, error) {
	if e := pt.fromMemory(id); e != nil {
		return e, nil
	}
	if p.cfg.Snapshots == nil || pt.complete {
		return pt.cache.put(pt.b.kind.NewAggregate(id), -1), nil
	}
	created, err := pt.loadMany(ctx, p, []string{id})
	if err != nil {
		return nil, err
	}
	if created {
		pt.verifyCP = true // see verifyCheckpoint
	}
	return pt.cache.get(id), nil
}

// fromSnapshot decodes a stored snapshot, refusing one of another schema.
func (p *Processor) fromSnapshot(pt *partition, s snapshots.Snapshot) (aggregates.Aggregate, error) {
	if s.Stamp != pt.b.kind.StateStamp() {
		return nil, fmt.Errorf("%w: snapshot of %q has stamp %q, the running code writes %q", errUntrusted, s.AggregateID, s.Stamp, pt.b.kind.StateStamp())
	}
	a := pt.b.kind.NewAggregate(s.AggregateID)
	if err := a.UnmarshalSnapshot(s.Data); err != nil {
		return nil, fmt.Errorf("%w: %w", errUntrusted, err)
	}
	return a, nil
}

// snapshotOf encodes a cached aggregate for the store.
func (pt *partition) snapshotOf(e *entry) (snapshots.Snapshot, error) {
	data, err := e.agg.MarshalSnapshot()
	if err != nil {
		return snapshots.Snapshot{}, err
	}
	return snapshots.Snapshot{AggregateID: e.agg.ID(), Version: e.agg.Version(), Offset: e.offset,
		Stamp: pt.b.kind.StateStamp(), Data: data}, nil
}

// evict shrinks the cache to size, handing aggregates with unsaved changes
// to the writer first (they stay readable until written).
func (pt *partition) evict(p *Processor, size int) {
	if p.cfg.Snapshots == nil || size <= 0 {
		return
	}
	var snaps []snapshots.Snapshot
	for pt.cache.len() > size {
		e := pt.cache.oldest()
		id := e.agg.ID()
		if _, busy := pt.dirty[id]; busy {
			break // changed in the open transaction: not committed yet
		}
		if _, ok := pt.changed[id]; ok {
			s, err := pt.snapshotOf(e)
			if err != nil {
				p.log.Error("encoding snapshot failed; keeping the aggregate in memory", "aggregate", id, "err", err)
				pt.cache.get(id)
				break
			}
			snaps = append(snaps, s)
			pt.mu.Lock()
			pt.unsaved[id] = e
			pt.mu.Unlock()
			delete(pt.changed, id)
		}
		pt.cache.remove(id)
		pt.complete = false
		p.stats.evictions.Add(1)
	}
	if len(snaps) > 0 {
		p.writer.submit(pt, nil, snaps)
	}
}

// checkpoint hands the writer the snapshots of every aggregate changed since
// the last checkpoint and a checkpoint at the end of the committed events.
// Call it only when no transaction is open on the partition.
func (pt *partition) checkpoint(p *Processor) {
	if p.cfg.Snapshots == nil || pt.isClosed() || len(pt.dirty) > 0 {
		return
	}
	snaps := make([]snapshots.Snapshot, 0, len(pt.changed))
	for id := range pt.changed {
		e := pt.cache.entries[id]
		if e == nil {
			continue // evicted: its snapshot is queued already
		}
		s, err := pt.snapshotOf(e)
		if err != nil {
			p.log.Error("encoding snapshot failed; no checkpoint this time", "aggregate", id, "err", err)
			return
		}
		snaps = append(snaps, s)
	}
	cp := &snapshots.Checkpoint{Offset: pt.nextOffset, Stamp: pt.b.kind.StateStamp(), Time: time.Now()}
	p.writer.submit(pt, cp, snaps)
	clear(pt.changed)
	pt.eventsSinceCP = 0
	pt.lastCP = time.Now()
}

// checkpointDue reports whether the checkpoint policy asks for one now.
func (pt *partition) checkpointDue(p *Processor) bool {
	return pt.eventsSinceCP >= p.cfg.CheckpointEvents ||
		(len(pt.changed) > 0 && time.Since(pt.lastCP) >= p.cfg.CheckpointInterval)
}

// process handles the records of one poll, in offset order.
func (pt *partition) process(ctx context.Context, p *Processor, sess *kgo.GroupTransactSession, recs []*kgo.Record) {
	if err := pt.prefetch(ctx, p, recs); err != nil {
		p.log.Warn("cannot load aggregates from the snapshot store; aborting the transaction", "partition", pt.id, "err", err)
		if errors.Is(err, errUntrusted) {
			pt.forceFull = true
		}
		p.txnErr.CompareAndSwap(nil, ptr(fmt.Errorf("loading aggregates of partition %d: %w", pt.id, err)))
		return
	}
	for _, r := range recs {
		pt.handle(ctx, p, sess, r)
	}
	// One state record per aggregate changed in this batch.
	for id, a := range pt.dirty {
		if a == nil {
			continue
		}
		v, err := a.MarshalState()
		if err != nil {
			p.log.Error("encoding state failed; state topic not updated", "aggregate", id, "err", err)
			continue
		}
		p.produce(sess, &kgo.Record{Topic: pt.b.names.State, Partition: pt.id, Key: []byte(id), Value: v})
		pt.dirty[id] = nil // produced; keep the key so an abort still knows it changed
	}
}

// handle decides one command record.
func (pt *partition) handle(ctx context.Context, p *Processor, sess *kgo.GroupTransactSession, r *kgo.Record) {
	p.stats.commands.Add(1)
	if len(r.Value) > p.cfg.MaxCommandBytes {
		cmd, _ := aggregates.DecodeCommand(r.Value)
		pt.invalid(p, sess, r, &cmd, aggregates.CodeTooLarge, fmt.Sprintf("command is %d bytes, the limit is %d: split it or raise --max-command-bytes", len(r.Value), p.cfg.MaxCommandBytes))
		return
	}
	cmd, err := aggregates.DecodeCommand(r.Value)
	if err != nil {
		pt.invalid(p, sess, r, &cmd, aggregates.CodeMalformed, err.Error())
		return
	}
	if string(r.Key) != cmd.AggregateID {
		pt.invalid(p, sess, r, &cmd, aggregates.CodeKeyMismatch, fmt.Sprintf("record key %q does not match aggregate_id %q: key commands by their aggregate id", truncate(r.Key), cmd.AggregateID))
		return
	}
	if owner := p.owner.Of(r.Key, pt.b.n); owner != pt.id {
		p.stats.forwarded.Add(1)
		fwd := &kgo.Record{Topic: r.Topic, Partition: owner, Key: r.Key, Value: r.Value, Headers: append(r.Headers[:len(r.Headers):len(r.Headers)],
			kgo.RecordHeader{Key: HeaderForwardedFrom, Value: []byte(r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10))})}
		p.produce(sess, fwd)
		return
	}
	ent, err := pt.aggregate(ctx, p, cmd.AggregateID)
	if err != nil {
		// Without the aggregate's state the command cannot be decided: the
		// transaction aborts and the partition is restored, from Kafka
		// alone if the store cannot be trusted.
		p.log.Warn("cannot load aggregate; aborting the transaction", "aggregate", cmd.AggregateID, "err", err)
		if errors.Is(err, errUntrusted) {
			pt.forceFull = true
		}
		p.txnErr.CompareAndSwap(nil, ptr(fmt.Errorf("loading %q: %w", cmd.AggregateID, err)))
		return
	}
	a := ent.agg
	events, err := execute(a, &cmd, p.cfg.Now)
	a.ClearChanges()
	res := aggregates.ResultFor(&cmd, pt.b.kind.Name(), a.Version(), events, err)
	for i := range events {
		v, err := events[i].Encode()
		if err != nil {
			// The aggregate already applied it: this transaction must not
			// commit, and the partition is restored from Kafka.
			p.txnErr.CompareAndSwap(nil, ptr(fmt.Errorf("encoding event %s of %q: %w", events[i].Type, cmd.AggregateID, err)))
			return
		}
		rec := &kgo.Record{Topic: pt.b.names.Events, Partition: pt.id, Key: topics.EventKey(cmd.AggregateID, events[i].Version), Value: v}
		pt.events = append(pt.events, producedEvent{id: cmd.AggregateID, rec: rec})
		p.produce(sess, rec)
	}
	if len(events) > 0 {
		pt.dirty[cmd.AggregateID] = a
		p.stats.events.Add(int64(len(events)))
	}
	switch res.Status {
	case aggregates.StatusAccepted:
		p.stats.accepted.Add(1)
	case aggregates.StatusDuplicate:
		p.stats.duplicates.Add(1)
	case aggregates.StatusRejected:
		p.stats.rejected.Add(1)
	}
	if res.Status == aggregates.StatusInvalid || res.Code == aggregates.CodeHandlerPanic {
		pt.deadLetter(p, sess, r, &cmd, res.Code, res.Reason)
		if res.Status == aggregates.StatusInvalid {
			p.stats.invalid.Add(1)
		}
	}
	pt.result(p, sess, &res)
}

// execute runs the command, turning a panic anywhere in it into an error.
func execute(a aggregates.Aggregate, cmd *aggregates.Command, now func() time.Time) (events []aggregates.Event, err error) {
	defer func() {
		if v := recover(); v != nil {
			events, err = nil, &aggregates.PanicError{Where: "executing " + cmd.Type, Value: v}
		}
	}()
	return a.Execute(cmd, now())
}

// invalid answers an undecodable or unacceptable command: an invalid result
// when its id could be read, and always a DLQ record.
func (pt *partition) invalid(p *Processor, sess *kgo.GroupTransactSession, r *kgo.Record, cmd *aggregates.Command, code, reason string) {
	p.stats.invalid.Add(1)
	pt.deadLetter(p, sess, r, cmd, code, reason)
	if cmd.ID == (ulid.ULID{}) {
		p.log.Warn("command without a readable id sent to the DLQ", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "reason", reason)
		return
	}
	res := aggregates.Result{CommandID: cmd.ID.String(), CommandType: cmd.Type, AggregateType: pt.b.kind.Name(),
		AggregateID: cmd.AggregateID, Status: aggregates.StatusInvalid, Version: -1, Code: code, Reason: reason,
		CorrelationID: cmd.Correlation(), Time: p.cfg.Now()}
	pt.result(p, sess, &res)
}

func (pt *partition) result(p *Processor, sess *kgo.GroupTransactSession, res *aggregates.Result) {
	if res.Time.IsZero() {
		res.Time = p.cfg.Now()
	}
	v, err := json.Marshal(res)
	if err != nil {
		p.txnErr.CompareAndSwap(nil, ptr(fmt.Errorf("encoding result of %s: %w", res.CommandID, err)))
		return
	}
	p.produce(sess, &kgo.Record{Topic: pt.b.names.Results, Partition: -1, Key: []byte(res.CommandID), Value: v})
}

func (pt *partition) deadLetter(p *Processor, sess *kgo.GroupTransactSession, r *kgo.Record, cmd *aggregates.Command, code, reason string) {
	h := make([]kgo.RecordHeader, 0, len(r.Headers)+6)
	h = append(h, r.Headers...)
	h = append(h,
		kgo.RecordHeader{Key: HeaderError, Value: []byte(reason)},
		kgo.RecordHeader{Key: HeaderCode, Value: []byte(code)},
		kgo.RecordHeader{Key: HeaderSourceTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderSourcePart, Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
	)
	if cmd.ID != (ulid.ULID{}) {
		h = append(h, kgo.RecordHeader{Key: HeaderCommandID, Value: []byte(cmd.ID.String())})
	}
	p.produce(sess, &kgo.Record{Topic: pt.b.names.DLQ, Partition: -1, Key: r.Key, Value: r.Value, Headers: h})
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

// restore rebuilds the partition's aggregates: from the last checkpoint
// and the snapshots when a store is configured and can be trusted, else by
// replaying the whole events partition.
func (p *Processor) restore(ctx context.Context, pt *partition) error {
	events := pt.b.names.Events
	end, err := p.stableEnd(ctx, events, pt.id)
	if err != nil {
		return err
	}
	began := time.Now()
	var start int64
	if p.cfg.Snapshots != nil && !pt.forceFull {
		start = p.checkpointStart(ctx, pt, end)
	}
	replayed, err := p.replayRange(ctx, pt, start, end)
	if start > 0 && errors.Is(err, errUntrusted) {
		p.log.Warn("snapshots cannot be trusted; falling back to a full replay of the partition", "topic", events, "partition", pt.id, "err", err)
		p.stats.fallbacks.Add(1)
		pt.cache, pt.unsaved, pt.changed = newCache(), map[string]*entry{}, map[string]struct{}{}
		start = 0
		replayed, err = p.replayRange(ctx, pt, 0, end)
	}
	if err != nil {
		return err
	}
	pt.nextOffset = end
	if start > 0 {
		pt.cpExpected.Store(true)
		p.stats.checkpointRestores.Add(1)
	} else {
		p.stats.fullReplays.Add(1)
		if p.cfg.Snapshots != nil && end > 0 {
			pt.checkpoint(p) // everything replayed is now in the store
		}
	}
	pt.restored.Store(true)
	p.stats.restores.Add(1)
	p.stats.eventsReplayed.Add(replayed)
	mode := "full replay"
	if start > 0 {
		mode = "from checkpoint"
	}
	p.log.Info("partition restored", "topic", events, "partition", pt.id, "mode", mode, "from_offset", start, "end_offset", end,
		"events", replayed, "cached", pt.cache.len(), "took", time.Since(began))
	return nil
}

// checkpointStart returns where to replay from: the partition's checkpoint
// if the store has one it can trust, else 0.
func (p *Processor) checkpointStart(ctx context.Context, pt *partition, end int64) int64 {
	cp, ok, err := p.cfg.Snapshots.Checkpoint(ctx, pt.b.kind.Name(), pt.id)
	log := p.log.With("aggregate_type", pt.b.kind.Name(), "partition", pt.id)
	switch {
	case err != nil:
		log.Warn("snapshot store unavailable; restoring with a full replay", "err", err)
	case !ok:
		log.Info("no checkpoint; restoring with a full replay")
	case cp.Stamp != pt.b.kind.StateStamp():
		log.Warn("checkpoint written for another state schema; restoring with a full replay", "stamp", cp.Stamp, "want", pt.b.kind.StateStamp())
	case cp.Offset > end:
		log.Warn("checkpoint is ahead of the events topic (was it recreated?); restoring with a full replay", "checkpoint", cp.Offset, "end", end)
	default:
		return cp.Offset
	}
	return 0
}

// replayRange applies the events at offsets [start, end) of the partition's
// events topic, read_committed. Aggregates not in memory come from the
// snapshot store (in batches) unless every aggregate is known to be in
// memory. A version gap means a snapshot is missing: errUntrusted.
func (p *Processor) replayRange(ctx context.Context, pt *partition, start, end int64) (int64, error) {
	pt.complete = start == 0
	if end <= start {
		return 0, nil
	}
	topic := pt.b.names.Events
	cl, err := kgo.NewClient(p.kafkaOpts(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {pt.id: kgo.NewOffset().At(start)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return 0, fmt.Errorf("creating restore client: %w", err)
	}
	defer cl.Close()
	var replayed int64
	last := start - 1
	batch := make([]decodedEvent, 0, 512)
	for last < end-1 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return replayed, err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return replayed, fmt.Errorf("reading %s/%d: %w", topic, pt.id, ferr)
		}
		batch = batch[:0]
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= end || r.Offset < start {
				return
			}
			last = max(last, r.Offset)
			if r.Attrs.IsControl() {
				return
			}
			e, err := pt.b.kind.DecodeEvent(r.Value)
			if err != nil {
				p.log.Error("stored event cannot be decoded; skipped", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
				return
			}
			batch = append(batch, decodedEvent{e: e, offset: r.Offset})
		})
		if err := p.loadMissing(ctx, pt, batch); err != nil {
			return replayed, err
		}
		for i := range batch {
			ok, err := p.replayOne(pt, &batch[i])
			if err != nil {
				return replayed, err
			}
			if ok {
				replayed++
			}
		}
		pt.evict(p, p.cfg.CacheSize)
		if pt.isClosed() {
			return replayed, errors.New("partition revoked during restore")
		}
	}
	return replayed, nil
}

type decodedEvent struct {
	e      aggregates.Event
	offset int64
}

// loadMissing brings the aggregates of batch that are not in memory in from
// the store with one LoadMany, or creates them when every aggregate is in
// memory already.
func (p *Processor) loadMissing(ctx context.Context, pt *partition, batch []decodedEvent) error {
	var missing []string
	seen := map[string]bool{}
	for i := range batch {
		id := batch[i].e.Subject
		if seen[id] || pt.fromMemory(id) != nil {
			continue
		}
		seen[id] = true
		if pt.complete || p.cfg.Snapshots == nil {
			pt.cache.put(pt.b.kind.NewAggregate(id), -1)
			continue
		}
		missing = append(missing, id)
	}
	_, err := pt.loadMany(ctx, p, missing)
	return err
}

// replayOne applies one stored event to its (loaded) aggregate. It reports
// whether the event was applied; an event the aggregate already contains is
// skipped.
func (p *Processor) replayOne(pt *partition, d *decodedEvent) (bool, error) {
	ent := pt.cache.get(d.e.Subject)
	a := ent.agg
	if d.e.Version <= a.Version() {
		return false, nil // in the snapshot already, or an older copy
	}
	if d.e.Version != a.Version()+1 {
		return false, fmt.Errorf("%w: aggregate %q is at version %d but the next stored event is version %d (offset %d): its snapshot is missing or stale",
			errUntrusted, d.e.Subject, a.Version(), d.e.Version, d.offset)
	}
	if err := a.Apply(&d.e); err != nil && !errors.Is(err, aggregates.ErrInvariantViolated) {
		p.log.Error("stored event does not apply; skipped", "aggregate", d.e.Subject, "version", d.e.Version, "offset", d.offset, "err", err)
		return false, nil
	}
	ent.offset = d.offset
	pt.changed[d.e.Subject] = struct{}{}
	return true, nil
}

// stableEnd waits until no transaction is open on the partition (its last
// stable offset equals its high watermark) and returns that end offset. A
// predecessor's in-doubt transaction either commits, and its events are
// replayed, or aborts; restoring before it ends could miss events.
func (p *Processor) stableEnd(ctx context.Context, topic string, part int32) (int64, error) {
	warned := false
	for {
		stable, err := p.adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			return 0, fmt.Errorf("listing stable offsets of %s: %w", topic, err)
		}
		high, err := p.adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return 0, fmt.Errorf("listing end offsets of %s: %w", topic, err)
		}
		s, ok1 := stable.Lookup(topic, part)
		h, ok2 := high.Lookup(topic, part)
		if !ok1 || !ok2 || s.Err != nil || h.Err != nil {
			return 0, fmt.Errorf("listing offsets of %s/%d: %w", topic, part, errors.Join(s.Err, h.Err))
		}
		if s.Offset >= h.Offset {
			return h.Offset, nil
		}
		if !warned {
			p.log.Info("waiting for an open transaction on the events partition to end before restoring", "topic", topic, "partition", part, "stable", s.Offset, "end", h.Offset)
			warned = true
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
