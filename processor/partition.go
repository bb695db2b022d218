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
// batch.
type partition struct {
	b        *binding
	id       int32
	restored atomic.Bool
	done     chan struct{} // closed when the partition is revoked or reset
	once     sync.Once

	aggs  map[string]aggregates.Aggregate
	dirty map[string]aggregates.Aggregate // changed in the open transaction
}

func newPartition(b *binding, id int32) *partition {
	return &partition{b: b, id: id, done: make(chan struct{}),
		aggs: map[string]aggregates.Aggregate{}, dirty: map[string]aggregates.Aggregate{}}
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
// committed.
func (pt *partition) committed() { clear(pt.dirty) }

// process handles the records of one poll, in offset order.
func (pt *partition) process(ctx context.Context, p *Processor, sess *kgo.GroupTransactSession, recs []*kgo.Record) {
	for _, r := range recs {
		pt.handle(p, sess, r)
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
func (pt *partition) handle(p *Processor, sess *kgo.GroupTransactSession, r *kgo.Record) {
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
	a := pt.aggs[cmd.AggregateID]
	if a == nil {
		a = pt.b.kind.NewAggregate(cmd.AggregateID)
		pt.aggs[cmd.AggregateID] = a
	}
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
		p.produce(sess, &kgo.Record{Topic: pt.b.names.Events, Partition: pt.id, Key: topics.EventKey(cmd.AggregateID, events[i].Version), Value: v})
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

// restore rebuilds the partition's aggregates from its events partition.
func (p *Processor) restore(ctx context.Context, pt *partition) error {
	events := pt.b.names.Events
	end, err := p.stableEnd(ctx, events, pt.id)
	if err != nil {
		return err
	}
	aggs := map[string]aggregates.Aggregate{}
	var replayed int64
	if end > 0 {
		cl, err := kgo.NewClient(p.kafkaOpts(
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{events: {pt.id: kgo.NewOffset().AtStart()}}),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.KeepControlRecords(),
		)...)
		if err != nil {
			return fmt.Errorf("creating restore client: %w", err)
		}
		defer cl.Close()
		last := int64(-1)
		for last < end-1 {
			fs := cl.PollFetches(ctx)
			if err := ctx.Err(); err != nil {
				return err
			}
			var ferr error
			fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
			if ferr != nil {
				return fmt.Errorf("reading %s/%d: %w", events, pt.id, ferr)
			}
			fs.EachRecord(func(r *kgo.Record) {
				if r.Offset >= end {
					return
				}
				last = r.Offset
				if r.Attrs.IsControl() {
					return
				}
				if p.replay(pt, aggs, r) {
					replayed++
				}
			})
			if pt.isClosed() {
				return errors.New("partition revoked during restore")
			}
		}
	}
	pt.aggs = aggs
	pt.restored.Store(true)
	p.stats.restores.Add(1)
	p.stats.eventsReplayed.Add(replayed)
	p.log.Info("partition restored", "topic", events, "partition", pt.id, "events", replayed, "aggregates", len(aggs), "end_offset", end)
	return nil
}

// replay applies one stored event record; it reports whether it applied.
func (p *Processor) replay(pt *partition, aggs map[string]aggregates.Aggregate, r *kgo.Record) bool {
	e, err := pt.b.kind.DecodeEvent(r.Value)
	if err != nil {
		p.log.Error("stored event cannot be decoded; skipped", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
		return false
	}
	a := aggs[e.Subject]
	if a == nil {
		a = pt.b.kind.NewAggregate(e.Subject)
		aggs[e.Subject] = a
	}
	if e.Version <= a.Version() {
		return false // an older copy of an event already applied
	}
	if err := a.Apply(&e); err != nil && !errors.Is(err, aggregates.ErrInvariantViolated) {
		p.log.Error("stored event does not apply; skipped", "aggregate", e.Subject, "version", e.Version, "offset", r.Offset, "err", err)
		return false
	}
	return true
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
