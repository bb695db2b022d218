package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

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

// process handles the records of one poll, in offset order, deciding them
// on up to workers goroutines (see fanOut).
func (pt *partition) process(ctx context.Context, p *Processor, sess *kgo.GroupTransactSession, recs []*kgo.Record, workers int) {
	if err := pt.st.lookup(ctx, pt.ownedIDs(p, recs)); err != nil {
		p.log.Warn("cannot load aggregates from the snapshot store; aborting the transaction and restoring the partition", "partition", pt.id, "err", err)
		if errors.Is(err, errUntrusted) {
			pt.fallBack(p)
		}
		p.txnErr.CompareAndSwap(nil, ptr(fmt.Errorf("loading aggregates of partition %d: %w", pt.id, err)))
		return
	}
	if workers < 2 || len(recs) < minFanOut || !pt.fanOut(ctx, p, sess, recs, workers) {
		// One clock reading per command: the end of one command's
		// handling is the start of the next one's.
		now := time.Now()
		for _, r := range recs {
			now = pt.handle(ctx, p, sess, r, now)
		}
	}
}

// produceStates produces one state record for each aggregate the open
// transaction changed on the partition: its state after its last event in
// the transaction, stamped with that event's time. The main loop calls it
// once, just before it commits, so a transaction of many polls writes an
// aggregate's state once, not once per poll.
func (pt *partition) produceStates(p *Processor, sess *kgo.GroupTransactSession) {
	for id, o := range pt.st.open {
		rec := pt.out.record()
		rec.Topic, rec.Partition, rec.Key, rec.Value, rec.Timestamp = pt.b.names.State, pt.id, pt.out.appendString(id), o.state, o.at
		p.produce(sess, rec)
	}
}

// handle decides one command record whose handling began at began (the
// time read when the previous command's handling ended); it returns when
// its handling ended.
func (pt *partition) handle(ctx context.Context, p *Processor, sess *kgo.GroupTransactSession, r *kgo.Record, began time.Time) (end time.Time) {
	p.stats.commands.Add(1)
	if len(r.Value) > p.cfg.MaxCommandBytes {
		cmd, _ := aggregates.DecodeCommand(r.Value)
		pt.invalid(p, sess, r, &cmd, aggregates.CodeTooLarge, fmt.Sprintf("command is %d bytes, the limit is %d: split it or raise --max-command-bytes", len(r.Value), p.cfg.MaxCommandBytes))
		return time.Now()
	}
	// The partition's one Command, reused: nothing keeps a command past its
	// handling, and one of its own would be an allocation per command.
	cmd := &pt.cmd
	var err error
	*cmd, err = aggregates.DecodeCommand(r.Value)
	if err != nil {
		pt.invalid(p, sess, r, cmd, aggregates.CodeMalformed, err.Error())
		return time.Now()
	}
	if string(r.Key) != cmd.AggregateID {
		pt.invalid(p, sess, r, cmd, aggregates.CodeKeyMismatch, fmt.Sprintf("record key %q does not match aggregate_id %q: key commands by their aggregate id", truncate(r.Key), cmd.AggregateID))
		return time.Now()
	}
	if owner := p.owner.Of(r.Key, pt.b.n); owner != pt.id {
		p.stats.forwarded.Add(1)
		end = time.Now()
		p.cfg.Observer.CommandHandled(pt.b.kind.Name(), pt.b.typeLabel(cmd.Type), "forwarded", end.Sub(began), 0)
		fwd := &kgo.Record{Topic: r.Topic, Partition: owner, Key: r.Key, Value: r.Value, Headers: append(r.Headers[:len(r.Headers):len(r.Headers)],
			kgo.RecordHeader{Key: HeaderForwardedFrom, Value: []byte(r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10))})}
		p.produce(sess, fwd)
		return end
	}
	span, traceParent := p.traceCommand(ctx, r, cmd, pt.b.kind.Name())
	if span != nil {
		defer span.End()
	}
	ent, err := pt.st.get(ctx, cmd.AggregateID)
	if err != nil {
		// Without the aggregate's state the command cannot be decided: the
		// transaction aborts and the partition is restored, from Kafka
		// alone if the store cannot be trusted.
		p.log.Warn("cannot load aggregate; aborting the transaction", "aggregate", cmd.AggregateID, "err", err)
		if errors.Is(err, errUntrusted) {
			pt.fallBack(p)
		}
		p.txnErr.CompareAndSwap(nil, ptr(fmt.Errorf("loading %q: %w", cmd.AggregateID, err)))
		return time.Now()
	}
	a := ent.agg
	stamp := began // events and result share one stamp
	if !p.cfg.realClock {
		stamp = p.cfg.Now()
	}
	d, err := execute(a, cmd, stamp, &pt.out)
	a.ClearChanges()
	res := aggregates.ResultFor(cmd, pt.b.kind.Name(), a.Version(), d.Events, err)
	return pt.emit(ctx, p, sess, r, cmd, a.ID(), &d, &res, nil, stamp, span, traceParent, began, time.Time{})
}

// emit writes what deciding cmd (record r) against aggregate id came to:
// its events, its result and, when it is invalid, its DLQ record; stamp is
// the events' time. enc, when not nil, is the result already encoded. It
// returns when the command's handling ended: end, or now when end is zero.
func (pt *partition) emit(ctx context.Context, p *Processor, sess *kgo.GroupTransactSession, r *kgo.Record, cmd *aggregates.Command, id string,
	d *aggregates.Decision, res *aggregates.Result, enc *encodedResult, stamp time.Time, span trace.Span, traceParent string, began, end time.Time) time.Time {
	events := d.Events
	for i := range events {
		rec := pt.out.record()
		rec.Topic, rec.Partition, rec.Value, rec.Timestamp = pt.b.names.Events, pt.id, d.Encoded[i], recordTime(p, stamp)
		rec.Key = pt.out.done(topics.AppendEventKey(pt.out.start(), cmd.AggregateID, events[i].Version))
		pt.st.changed(id, rec, d.State)
		p.produce(sess, rec)
	}
	if len(events) > 0 {
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
	if res.Code == aggregates.CodeInvariantViolated {
		p.log.Warn("command rejected: its events would break the aggregate's invariant (a bug in the aggregate)", "command_id", res.CommandID,
			"command_type", cmd.Type, "aggregate_type", pt.b.kind.Name(), "aggregate", cmd.AggregateID, "version", res.Version, "reason", res.Reason)
	}
	if res.Status == aggregates.StatusInvalid || res.Code == aggregates.CodeHandlerPanic || res.Code == aggregates.CodeUnencodable {
		// A panic or an unencodable event is a bug in the aggregate's code,
		// not in the command: ERROR.
		level := slog.LevelWarn
		if res.Code == aggregates.CodeHandlerPanic || res.Code == aggregates.CodeUnencodable {
			level = slog.LevelError
		}
		p.log.Log(ctx, level, "command sent to the DLQ", "command_id", res.CommandID, "command_type", cmd.Type,
			"aggregate_type", pt.b.kind.Name(), "aggregate", cmd.AggregateID, "code", res.Code, "reason", res.Reason)
		pt.deadLetter(p, sess, r, cmd, res.Code, res.Reason)
		if res.Status == aggregates.StatusInvalid {
			p.stats.invalid.Add(1)
		}
	}
	if span != nil {
		span.SetAttributes(attribute.String("chronicle.outcome", string(res.Status)), attribute.Int64("chronicle.version", res.Version))
		if res.Code != "" {
			span.SetAttributes(attribute.String("chronicle.code", res.Code))
		}
	}
	if enc != nil {
		pt.produceResult(p, sess, res, enc.v, enc.err, traceParent)
	} else {
		res.Time = stamp
		pt.result(p, sess, res, traceParent)
	}
	if end.IsZero() {
		end = time.Now()
	}
	p.cfg.Observer.CommandHandled(pt.b.kind.Name(), pt.b.typeLabel(cmd.Type), string(res.Status), end.Sub(began), end.Sub(r.Timestamp))
	return end
}

// ownedIDs returns the distinct record keys of recs that this partition
// owns: the aggregates its commands address. The slice and the set behind
// it are the partition's, reused by the next batch; an aggregate in memory
// lends its id string, so only ids new to memory are allocated.
func (pt *partition) ownedIDs(p *Processor, recs []*kgo.Record) []string {
	if pt.seen == nil {
		pt.seen = make(map[string]struct{}, len(recs))
	}
	clear(pt.seen)
	clear(pt.ids)
	ids := pt.ids[:0]
	for _, r := range recs {
		if len(r.Key) == 0 || p.owner.Of(r.Key, pt.b.n) != pt.id {
			continue
		}
		if _, ok := pt.seen[string(r.Key)]; ok {
			continue
		}
		var id string
		if e := pt.st.cache.entries[string(r.Key)]; e != nil {
			id = e.agg.ID()
		} else {
			id = string(r.Key)
		}
		pt.seen[id] = struct{}{}
		ids = append(ids, id)
	}
	pt.ids = ids
	return ids
}

// execute runs the command, turning a panic anywhere in it into an error.
// The events and the new state are encoded before the aggregate changes,
// so a command whose data cannot be encoded is rejected alone.
func execute(a aggregates.Aggregate, cmd *aggregates.Command, now time.Time, out *arena) (d aggregates.Decision, err error) {
	defer func() {
		if v := recover(); v != nil {
			d, err = aggregates.Decision{}, &aggregates.PanicError{Where: "executing " + cmd.Type, Value: v}
		}
	}()
	d, buf, err := a.ExecuteAppend(cmd, now, out.start())
	if err == nil {
		out.buf = buf
	}
	return d, err
}

// invalid answers an undecodable or unacceptable command: an invalid result
// when its id could be read, and always a DLQ record.
func (pt *partition) invalid(p *Processor, sess *kgo.GroupTransactSession, r *kgo.Record, cmd *aggregates.Command, code, reason string) {
	p.stats.invalid.Add(1)
	pt.deadLetter(p, sess, r, cmd, code, reason)
	p.cfg.Observer.CommandHandled(pt.b.kind.Name(), pt.b.typeLabel(cmd.Type), string(aggregates.StatusInvalid), 0, time.Since(r.Timestamp))
	if cmd.ID != (ulid.ULID{}) {
		p.log.Warn("command sent to the DLQ", "command_id", cmd.ID.String(), "command_type", cmd.Type,
			"aggregate_type", pt.b.kind.Name(), "aggregate", cmd.AggregateID, "code", code, "reason", reason)
	}
	if cmd.ID == (ulid.ULID{}) {
		p.log.Warn("command without a readable id sent to the DLQ", "aggregate_type", pt.b.kind.Name(), "topic", r.Topic, "partition", r.Partition,
			"offset", r.Offset, "code", code, "reason", reason)
		return
	}
	res := aggregates.Result{CommandID: cmd.ID.String(), CommandType: cmd.Type, AggregateType: pt.b.kind.Name(),
		AggregateID: cmd.AggregateID, Status: aggregates.StatusInvalid, Version: -1, Code: code, Reason: reason,
		CorrelationID: cmd.Correlation(), Time: p.cfg.Now()}
	pt.result(p, sess, &res, "")
}

// result produces res; traceParent, when set, goes into its traceparent
// header.
func (pt *partition) result(p *Processor, sess *kgo.GroupTransactSession, res *aggregates.Result, traceParent string) {
	if res.Time.IsZero() {
		res.Time = p.cfg.Now()
	}
	v, err := res.AppendJSON(pt.out.start())
	if err == nil {
		v = pt.out.done(v)
	}
	pt.produceResult(p, sess, res, v, err, traceParent)
}

// produceResult produces res, encoded as v, or records encoding error err.
func (pt *partition) produceResult(p *Processor, sess *kgo.GroupTransactSession, res *aggregates.Result, v []byte, err error, traceParent string) {
	if err != nil {
		p.txnErr.CompareAndSwap(nil, ptr(fmt.Errorf("encoding result of %s: %w", res.CommandID, err)))
		return
	}
	rec := pt.out.record()
	rec.Topic, rec.Partition, rec.Value, rec.Timestamp = pt.b.names.Results, -1, v, recordTime(p, res.Time)
	rec.Key = pt.out.appendString(res.CommandID)
	if traceParent != "" {
		rec.Headers = []kgo.RecordHeader{{Key: HeaderTraceParent, Value: []byte(traceParent)}}
	}
	p.produce(sess, rec)
}

func (pt *partition) deadLetter(p *Processor, sess *kgo.GroupTransactSession, r *kgo.Record, cmd *aggregates.Command, code, reason string) {
	p.cfg.Observer.DeadLettered(pt.b.kind.Name(), code)
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

// recordTime is the timestamp of a record written at t: t itself, read
// from the real clock moments ago, which spares the Kafka client reading
// the clock once per record; with Config.Now set (tests), the zero time,
// so that the client stamps the record and no made-up time reaches the
// broker (where it could expire records by retention at once).
func recordTime(p *Processor, t time.Time) time.Time {
	if !p.cfg.realClock {
		return time.Time{}
	}
	return t
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}
