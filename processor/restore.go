package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/snapshots"
)

// errUntrusted means the store's content cannot be trusted for a partition
// (a corrupt snapshot, another schema, a version gap after a snapshot): it
// is restored with a full replay.
var errUntrusted = errors.New("snapshot store content not trusted")

// errStopped marks a partition that cannot be restored by the running code:
// it stays paused until an instance that can restore it takes it over.
var errStopped = errors.New("partition stopped")

// StoppedError is why a partition was stopped: a stored event the running
// code cannot decode or apply. Restore never skips an event, since the
// aggregate would end a version short and the next command would reuse that
// version. Deploy the code that reads the event (readers of a new schema
// version before its writers) and restart.
type StoppedError struct {
	Topic         string
	Partition     int32
	Offset        int64
	Type          string // the event's type, when it could be read
	SchemaVersion int    // the event's schemaversion, when it could be read
	Err           error
}

func (e *StoppedError) Error() string {
	return fmt.Sprintf("partition %s/%d stopped at offset %d (event type %q, schema version %d): %v; the running code cannot restore it: deploy a version that reads this event (readers of a new schema version before its writers), the partition resumes on that instance",
		e.Topic, e.Partition, e.Offset, e.Type, e.SchemaVersion, e.Err)
}

// Unwrap returns the decoding or apply error.
func (e *StoppedError) Unwrap() []error { return []error{errStopped, e.Err} }

// rawEvent is one stored event record.
type rawEvent struct {
	offset int64
	value  []byte
}

// eventSource reads one events partition.
type eventSource interface {
	// name is "topic/partition", for messages.
	name() string
	// topic is the events topic's name.
	topic() string
	// read hands every committed record at offsets [from, end), in order and
	// in batches, to fn, and returns once all were handed. Unless keep is
	// set, a record's value is valid only until fn returns: the source may
	// reuse its memory.
	read(ctx context.Context, from, end int64, keep bool, fn func([]rawEvent) error) error
}

// restoreReport says what a restore did.
type restoreReport struct {
	mode     string // "full replay" or "from checkpoint"
	from     int64
	replayed int64 // events applied, or deferred (a restore from a checkpoint)
	deferred int   // aggregates whose events after the checkpoint wait for their first use
	fallback bool  // a checkpoint restore was abandoned for a full replay
}

// restore rebuilds the partition's aggregates from its events up to end
// (exclusive): from the checkpoint the claim returned, when there is one it
// can trust and full is false, else from offset 0. A restore from a
// checkpoint decodes the events after it and defers them (invariant 7): the
// snapshots they apply to are loaded when their aggregates are first used.
// A snapshot that turns out stale or corrupt falls back to a full replay
// (here, or later at that first use); an event that cannot be decoded or
// applied stops the partition (*StoppedError).
func (s *aggState) restore(ctx context.Context, src eventSource, end int64, full bool) (restoreReport, error) {
	s.clearForRestore()
	var start int64
	if s.store != nil {
		start = s.claim(ctx, end, full)
	}
	rep := restoreReport{mode: "full replay"}
	s.complete.Store(start == 0)
	n, err := s.replay(ctx, src, start, end)
	if start > 0 && errors.Is(err, errUntrusted) {
		s.log.Warn("snapshots cannot be trusted; falling back to a full replay of the partition",
			"aggregate_type", s.kind.Name(), "partition", s.part, "events", src.name(), "reason", err)
		s.stats.fallbacks.Add(1)
		rep.fallback = true
		s.cache, s.unsaved, s.pending = newCache(), map[string]struct{}{}, map[string][]decodedEvent{}
		s.complete.Store(true)
		s.mu.Lock()
		epoch := s.epoch
		s.claimed = false // until the store is emptied: nothing is loaded from it
		s.mu.Unlock()
		if err := s.claimEmpty(ctx, epoch); err == nil {
			s.setClaimed(epoch)
		} else {
			s.log.Warn("snapshot store unavailable; the full replay goes on without it, snapshots resume when it is back",
				"aggregate_type", s.kind.Name(), "partition", s.part, "err", err)
		}
		start = 0
		n, err = s.replay(ctx, src, 0, end)
	}
	rep.replayed = n
	if err != nil {
		return rep, err
	}
	rep.from = start
	rep.deferred = len(s.pending)
	s.nextOffset, s.expectNext = end, end
	if start > 0 {
		rep.mode = "from checkpoint"
		s.stats.checkpointRestores.Add(1)
		s.stats.deferred.Add(int64(rep.deferred))
	} else {
		s.stats.fullReplays.Add(1)
	}
	switch {
	case s.store == nil || len(s.unsaved) == 0 && len(s.pending) == 0:
	case start == 0:
		s.checkpoint() // the store was emptied: what was replayed goes to it
	default:
		// The events after the checkpoint are what the previous owner had
		// not checkpointed yet; the store's checkpoint still covers
		// everything below them, so the partition resumes at once and the
		// checkpoint policy saves them with the next checkpoint, as if
		// they had been committed now. Loading and encoding their
		// snapshots here would cost the paused partition more than the
		// replay.
		s.lastCP = time.Now()
	}
	return rep, nil
}

// clearForRestore empties the state and gives it a new epoch, so a restore
// retried after a failure starts from nothing and claims again.
func (s *aggState) clearForRestore() {
	s.cache, s.unsaved, s.pending = newCache(), map[string]struct{}{}, map[string][]decodedEvent{}
	clear(s.open)
	s.produced = s.produced[:0]
	s.nextOffset, s.eventsSinceCP = 0, 0
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch = ulid.Make().String()
	s.claimed, s.lease, s.acks, s.lost = false, snapshots.Lease{}, nil, nil
}

// claim takes the partition's lease in the store and returns the offset to
// replay from: the checkpoint the claim found, or 0.
func (s *aggState) claim(ctx context.Context, end int64, full bool) int64 {
	log := s.log.With("aggregate_type", s.kind.Name(), "partition", s.part)
	s.mu.Lock()
	epoch := s.epoch
	s.mu.Unlock()
	var (
		cp  snapshots.Checkpoint
		ok  bool
		err error
	)
	err = s.retry(ctx, "claim", func() error {
		cp, ok, err = s.store.Claim(ctx, s.kind.Name(), s.part, epoch)
		return err
	})
	if err != nil && !errors.Is(err, snapshots.ErrCorrupt) {
		s.obs.SnapshotStoreError("claim")
		log.Warn("snapshot store unavailable; restoring with a full replay, snapshots resume when it is back", "err", err)
		return 0
	}
	switch {
	case err != nil:
		log.Warn("checkpoint corrupt; restoring with a full replay", "err", err)
	case full:
	case !ok:
		log.Info("no checkpoint; restoring with a full replay")
	case cp.Stamp != s.cpStamp:
		log.Warn("checkpoint written for another state schema or another incarnation of the events topic; restoring with a full replay", "stamp", cp.Stamp, "want", s.cpStamp)
	case cp.Offset > end:
		log.Warn("checkpoint is ahead of the events topic (was it recreated?); restoring with a full replay", "checkpoint", cp.Offset, "end", end)
	default:
		s.setClaimed(epoch)
		return cp.Offset
	}
	// A full replay starts from an empty partition in the store.
	if err := s.claimEmpty(ctx, epoch); err != nil && !errors.Is(err, snapshots.ErrCorrupt) {
		log.Warn("snapshot store unavailable; restoring with a full replay, snapshots resume when it is back", "err", err)
		return 0
	}
	s.setClaimed(epoch)
	return 0
}

// setClaimed records that the store's lease is ours under epoch.
func (s *aggState) setClaimed(epoch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch == epoch {
		s.claimed, s.lease = true, snapshots.Lease{Epoch: epoch}
	}
}

// replay applies the events at offsets [start, end). After a checkpoint
// (start > 0) it defers those of aggregates not in memory to their first
// use instead (invariant 7): their snapshots are not read now.
func (s *aggState) replay(ctx context.Context, src eventSource, start, end int64) (int64, error) {
	if end <= start {
		return 0, nil
	}
	lazy := start > 0
	if lazy && len(s.pending) == 0 {
		// At most one aggregate per event: sized once, not grown (install
		// lets go of it once the last deferred aggregate is loaded).
		s.pending = make(map[string][]decodedEvent, min(end-start, 1<<14))
	}
	var replayed int64
	batch := make([]decodedEvent, 0, replayChunk)
	var ids []string
	seen := map[string]struct{}{}
	// The subject of most events is an aggregate in memory: its id string
	// serves, instead of a new one per event. cached says whether the last
	// event's was.
	var cached *entry
	subject := func(b []byte) string {
		if cached = s.cache.entries[string(b)]; cached != nil {
			return cached.agg.ID()
		}
		if evs := s.pending[string(b)]; len(evs) > 0 {
			return evs[0].e.Subject
		}
		return string(b)
	}
	apply := func(recs []rawEvent) error {
		batch, ids = batch[:0], ids[:0]
		clear(seen)
		for _, r := range recs {
			// The event's causation id shares r.value, which batch keeps
			// until the event is applied.
			cached = nil
			e, err := s.kind.DecodeEventForReplay(r.value, subject)
			if err != nil {
				return s.stop(src, r, err)
			}
			if lazy && cached == nil && s.cache.entries[e.Subject] == nil {
				// Deferred: the event keeps r.value (its causation id) until
				// it is applied, which the source allows (keep).
				s.pending[e.Subject] = append(s.pending[e.Subject], decodedEvent{e: e, offset: r.offset, raw: r.value})
				replayed++
				continue
			}
			// The entry found while decoding stays in the cache until the
			// batch is applied: only evict, after it, removes entries.
			batch = append(batch, decodedEvent{e: e, offset: r.offset, raw: r.value, ent: cached})
			if cached != nil || s.cache.entries[e.Subject] != nil { // the decoding may not have looked it up
				continue // loaded already: most events once the aggregates are in memory
			}
			if _, ok := seen[e.Subject]; !ok {
				seen[e.Subject] = struct{}{}
				ids = append(ids, e.Subject)
			}
		}
		if err := s.prefetch(ctx, ids); err != nil {
			return err
		}
		for i := range batch {
			ok, err := s.replayOne(src, &batch[i])
			if err != nil {
				return err
			}
			if ok {
				replayed++
			}
		}
		s.evict()
		if s.closed.Load() {
			return errors.New("partition revoked during restore")
		}
		return nil
	}
	// Only a restore from a checkpoint keeps records after they were
	// handed over: the deferred events.
	err := src.read(ctx, start, end, lazy, func(recs []rawEvent) error {
		for len(recs) > 0 {
			n := min(len(recs), replayChunk)
			if err := apply(recs[:n]); err != nil {
				return err
			}
			recs = recs[n:]
		}
		return nil
	})
	return replayed, err
}

// replayChunk is how many records a replay decodes before it applies them:
// few enough that their bytes are still in the CPU's cache when they are
// applied (a poll can hand over megabytes).
const replayChunk = 512

type decodedEvent struct {
	e      aggregates.Event
	offset int64
	raw    []byte
	ent    *entry // the cache entry of e.Subject if decoding found one, for replayOne
}

// replayOne applies one stored event to its (loaded) aggregate. It reports
// whether the event was applied; an event the aggregate already contains is
// skipped.
func (s *aggState) replayOne(src eventSource, d *decodedEvent) (bool, error) {
	ent := d.ent
	if ent != nil {
		s.cache.order.MoveToFront(ent.elem)
	} else {
		ent = s.cache.get(d.e.Subject)
	}
	a := ent.agg
	if d.e.Version <= a.Version() {
		return false, nil // in the snapshot already
	}
	if d.e.Version != a.Version()+1 {
		return false, fmt.Errorf("%w: aggregate %q is at version %d but the next stored event is version %d (offset %d): its snapshot is missing or stale",
			errUntrusted, d.e.Subject, a.Version(), d.e.Version, d.offset)
	}
	if err := a.Apply(&d.e); err != nil && !errors.Is(err, aggregates.ErrInvariantViolated) {
		return false, s.stop(src, rawEvent{offset: d.offset, value: d.raw}, err)
	}
	ent.offset = d.offset
	if d.e.Version-1 <= ent.stored || ent.stored < -1 { // -2: unknown
		// Newer than its stored snapshot from now on. An aggregate that
		// already was is in unsaved: it leaves unsaved only once stored
		// reaches its version.
		s.unsaved[d.e.Subject] = struct{}{}
	}
	return true, nil
}

// stop builds the *StoppedError for a record the running code cannot
// restore.
func (s *aggState) stop(src eventSource, r rawEvent, err error) error {
	var head struct {
		Type          string `json:"type"`
		SchemaVersion int    `json:"schemaversion"`
	}
	_ = json.Unmarshal(r.value, &head) // best effort: for the message only
	return &StoppedError{Topic: src.topic(), Partition: s.part, Offset: r.offset, Type: head.Type, SchemaVersion: head.SchemaVersion, Err: err}
}

// restore rebuilds pt's aggregates from its events partition (and the
// snapshot store), once no transaction is open on that partition.
func (p *Processor) restore(ctx context.Context, pt *partition) error {
	events := pt.b.names.Events
	pt.setPhase("reading the end of %s/%d", events, pt.id)
	end, err := p.stableEnd(ctx, events, pt.id, func(stable, high int64) {
		pt.setPhase("waiting for an open transaction on %s/%d to end (stable offset %d, end offset %d; at most the transaction timeout, %s)",
			events, pt.id, stable, high, p.cfg.TransactionTimeout)
	})
	if err != nil {
		return err
	}
	pt.setPhase("replaying %s/%d up to offset %d", events, pt.id, end)
	began := time.Now()
	rep, err := pt.st.restore(ctx, kafkaEvents{p: p, events: events, part: pt.id}, end, pt.forceFull)
	if errors.Is(err, errUntrusted) {
		pt.forceFull = true // the retry replays everything
	}
	if err != nil {
		return err
	}
	pt.restored.Store(true)
	p.stats.restores.Add(1)
	p.stats.eventsReplayed.Add(rep.replayed)
	mode := "full"
	if rep.from > 0 {
		mode = "checkpoint"
	}
	p.cfg.Observer.Restored(pt.b.kind.Name(), mode, time.Since(began), rep.replayed)
	pt.st.gauges.cached.Store(int64(pt.st.cache.len()))
	p.log.Info("partition restored", "topic", events, "partition", pt.id, "mode", rep.mode, "from_offset", rep.from, "end_offset", end,
		"events", rep.replayed, "cached", pt.st.cache.len(), "deferred", rep.deferred, durationAttr("took", time.Since(began)))
	return nil
}

// kafkaEvents reads an events partition from Kafka, read_committed.
type kafkaEvents struct {
	p      *Processor
	events string // the topic
	part   int32
}

func (k kafkaEvents) name() string { return fmt.Sprintf("%s/%d", k.events, k.part) }

func (k kafkaEvents) topic() string { return k.events }

// read consumes [from, end). It ends once it was handed any record (data
// or transaction marker, kept with KeepControlRecords) at end-1 or beyond:
// a partition is delivered in offset order and every offset below end is
// either delivered or aborted data whose abort marker, below end, is. When
// polls stay empty it also ends once the log start has passed end
// (compaction or deletion removed the rest), and it says what it waits on.
func (k kafkaEvents) read(ctx context.Context, from, end int64, keep bool, fn func([]rawEvent) error) error {
	if end <= from {
		return nil
	}
	cl, err := kgo.NewClient(k.p.kafkaOpts(k.clientOpts(from, keep)...)...)
	if err != nil {
		return fmt.Errorf("creating restore client: %w", err)
	}
	defer cl.Close()
	next := from // the offset after the last record handed out
	recs := make([]rawEvent, 0, 512)
	var fetched []*kgo.Record
	lastProgress, lastLog := time.Now(), time.Now()
	for done := false; !done; {
		pollCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(pollCtx)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				ferr = errors.Join(ferr, err)
			}
		})
		if ferr != nil {
			return fmt.Errorf("reading %s: %w", k.name(), ferr)
		}
		recs = recs[:0]
		fetched = fetched[:0]
		fs.EachRecord(func(r *kgo.Record) {
			if !keep {
				fetched = append(fetched, r) // recycled below
			}
			if r.Offset >= end-1 {
				done = true
			}
			if r.Offset < next || r.Offset >= end {
				return
			}
			next = r.Offset + 1
			if !r.Attrs.IsControl() {
				recs = append(recs, rawEvent{offset: r.Offset, value: r.Value})
			}
		})
		if len(recs) > 0 {
			if err := fn(recs); err != nil {
				return err
			}
		}
		// fn is done with the values: the batches go back to the pool.
		// Not when it keeps them: a pool given in Config.KafkaOptions
		// reaches this client too, and would reuse the bytes of the
		// events a checkpoint restore defers.
		if !keep {
			for _, r := range fetched {
				r.Recycle()
			}
		}
		if done {
			return nil
		}
		if !fs.Empty() {
			lastProgress = time.Now()
			continue
		}
		starts, err := k.p.adm.ListStartOffsets(ctx, k.events)
		if err != nil {
			return fmt.Errorf("listing the start offset of %s: %w", k.name(), err)
		}
		if so, ok := starts.Lookup(k.events, k.part); ok && so.Err == nil && so.Offset >= end {
			return nil // what is left below end was removed
		}
		if time.Since(lastProgress) > 10*time.Second && time.Since(lastLog) > 10*time.Second {
			k.p.log.Warn("restore is waiting for events that do not arrive", "events", k.name(), "next_offset", next, "end_offset", end,
				durationAttr("waited", time.Since(lastProgress).Round(time.Second)))
			lastLog = time.Now()
		}
	}
	return nil
}

// stableEnd returns the partition's end offset once no transaction is open
// on it (its last stable offset equals its high watermark). A predecessor's in-doubt
// transaction either commits, and its events are replayed, or aborts;
// restoring before it ends could miss events. While it waits it logs what
// it waits on, every 10 seconds, and tells waiting each time it finds a
// transaction open.
func (p *Processor) stableEnd(ctx context.Context, topic string, part int32, waiting func(stable, high int64)) (int64, error) {
	began, lastLog := time.Now(), time.Time{}
	for {
		stable, err := p.adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			return 0, fmt.Errorf("listing stable offsets of %s: %w", topic, err)
		}
		s, ok := stable.Lookup(topic, part)
		if !ok || s.Err != nil {
			return 0, fmt.Errorf("listing the stable offset of %s/%d: %w", topic, part, s.Err)
		}
		high, err := p.adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return 0, fmt.Errorf("listing end offsets of %s: %w", topic, err)
		}
		h, ok := high.Lookup(topic, part)
		if !ok || h.Err != nil {
			return 0, fmt.Errorf("listing the end offset of %s/%d: %w", topic, part, h.Err)
		}
		if s.Offset >= h.Offset {
			return h.Offset, nil
		}
		waiting(s.Offset, h.Offset)
		if time.Since(lastLog) >= 10*time.Second {
			// The partition stays paused meanwhile: WARN once it lasts.
			level := slog.LevelInfo
			if time.Since(began) >= 10*time.Second {
				level = slog.LevelWarn
			}
			p.log.Log(ctx, level, "waiting for an open transaction on the events partition to end before restoring; the partition stays paused", "topic", topic, "partition", part,
				"stable_offset", s.Offset, "end_offset", h.Offset, durationAttr("waited", time.Since(began).Round(time.Millisecond)),
				durationAttr("bound", p.cfg.TransactionTimeout))
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// clientOpts are the options of the client that reads from offset from;
// keep as for read.
func (k kafkaEvents) clientOpts(from int64, keep bool) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{k.events: {k.part: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		// A session spares a fetch the list of partitions, of which this
		// client has one, and closing it costs a round trip that waits
		// for the fetch in flight: 2 of a checkpoint restore's 12 ms.
		kgo.DisableFetchSessions(),
	}
	if !keep {
		opts = append(opts, kgo.WithPools(new(fetchPool)))
	}
	return opts
}

// fetchPool lends a restore client the memory it decompresses fetched
// batches into and the records it decodes them into (kgo.WithPools), and
// takes it back once read recycles the batch's records. Without it the
// client allocated about 540 bytes per replayed event (decompressed
// batches and records: 0.5 GB per million events), and a full replay on
// one core spent about a tenth of its time more, mostly collecting it.
type fetchPool struct{ bytes, recs sync.Pool }

// GetDecompressBytes returns a buffer to decompress compressed into: a
// returned one, or a new one sized for JSON's usual snappy ratio (the
// client grows a buffer that is too small).
func (p *fetchPool) GetDecompressBytes(compressed []byte, _ kgo.CompressionCodecType) []byte {
	if b, ok := p.bytes.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, 0, 4*len(compressed))
}

// PutDecompressBytes takes back a buffer (zeroed by the client).
func (p *fetchPool) PutDecompressBytes(b []byte) { p.bytes.Put(&b) }

// GetRecords returns a slice with room for n records.
func (p *fetchPool) GetRecords(n int) []kgo.Record {
	if b, ok := p.recs.Get().(*[]kgo.Record); ok && cap(*b) >= n {
		return (*b)[:0]
	}
	return make([]kgo.Record, 0, n)
}

// PutRecords takes back a batch's records.
func (p *fetchPool) PutRecords(r []kgo.Record) { p.recs.Put(&r) }
