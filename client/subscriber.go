package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/topics"
)

// Handler is called with each event a Subscriber reads. Calls for one
// partition (and so for one aggregate) are made one at a time in offset
// order, which is version order; calls for different partitions run
// concurrently. A nil error marks the event done (its offset is committed
// later); a non-nil error stops the Subscriber, which returns it from Run,
// and the event is delivered again after a restart. ctx ends when the
// Subscriber stops or the partition is taken away by a rebalance; a handler
// must then return promptly.
type Handler func(ctx context.Context, e aggregates.Event) error

// RecordError describes a record of an events topic that could not be
// decoded into an Event: a malformed document, an event type no registered
// aggregate knows, or a schema version newer than the running code reads (or
// one no upcaster bridges). It unwraps to the decoder's error, which matches
// aggregates.ErrMalformed, ErrUnknownEventType or ErrSchemaVersion.
type RecordError struct {
	// Topic, Partition and Offset locate the record.
	Topic     string
	Partition int32
	Offset    int64
	// EventType and SchemaVersion are read from the record's envelope; they
	// are empty and 0 when the envelope itself cannot be read.
	EventType     string
	SchemaVersion int
	// Key and Value are the record's bytes, untouched.
	Key   []byte
	Value []byte
	// Err is the decoder's error.
	Err error
}

// NewRecordError describes rec, which dec could not decode: partial is what
// the decoder returned along with err (aggregates' decoders fill in the type
// and schema version whenever the envelope can be read).
func NewRecordError(rec *kgo.Record, partial aggregates.Event, err error) *RecordError {
	return &RecordError{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
		EventType: partial.Type, SchemaVersion: partial.SchemaVersion, Key: rec.Key, Value: rec.Value, Err: err}
}

// Error says where the record is, what it claims to be and why it cannot be
// decoded.
func (e *RecordError) Error() string {
	what := "type unreadable"
	if e.EventType != "" {
		what = fmt.Sprintf("type %q, schema version %d", truncate([]byte(e.EventType)), e.SchemaVersion)
	}
	return fmt.Sprintf("event record %s/%d offset %d (%s, key %q) cannot be decoded: %v", e.Topic, e.Partition, e.Offset, what, truncate(e.Key), e.Err)
}

// Unwrap returns the decoder's error.
func (e *RecordError) Unwrap() error { return e.Err }

// SubscriberConfig configures a Subscriber. Zero values take the documented
// defaults; Validate reports every problem at once.
type SubscriberConfig struct {
	// Kafka says how to reach the brokers.
	Kafka Kafka
	// Prefixes name the aggregate types whose "<prefix>.events" topics are
	// read, e.g. "orders".
	Prefixes []string
	// Decoder decodes event records: an *aggregates.Registry holding every
	// type read, or the aggregates.Kind when there is one.
	Decoder EventDecoder
	// Handler is called with every event (required).
	Handler Handler
	// SkipUndecodable skips records that cannot be decoded instead of
	// stopping: each is logged at warning level (with its *RecordError) and
	// its offset is committed like a handled event's, so the event is lost
	// to this consumer. For tools that show what they can; a read model
	// should leave it false.
	//
	// False (the default) is strict: the first such record stops Run with
	// an error that unwraps to its *RecordError, and its offset is not
	// committed, so once code that reads it is deployed (the aggregate's
	// newer version with its upcasters), a restart of the group reads it
	// again. Events before it in its partition are committed as usual.
	SkipUndecodable bool
	// OnError, when set, is also told of every record that cannot be
	// decoded, before the Subscriber stops or skips it (e.g. to count them
	// or park them elsewhere). It is called from the partition's goroutine,
	// so concurrently for different partitions.
	OnError func(ctx context.Context, err *RecordError)

	// Group is the consumer group; its members share the partitions and the
	// group's committed offsets say where a restart resumes. Empty reads
	// every partition in this process without committing anything (for
	// tools such as `chronicle tail`).
	Group string
	// FromBeginning starts at the oldest event where there is no committed
	// offset (always, without a group); otherwise only events written after
	// the start are read.
	FromBeginning bool
	// AggregateIDs, when set, restricts the handler to events of these
	// aggregates; other records are skipped without being decoded. Without
	// a group only their owner partitions are read.
	AggregateIDs []string

	// CommitInterval is how often the offsets of handled events are
	// committed (group only). Default 1s, at least 100ms. Offsets are also committed when a
	// partition is revoked and when Run returns.
	CommitInterval time.Duration
	// ShutdownTimeout bounds the final commit when Run returns. Default 10s.
	ShutdownTimeout time.Duration
	// MaxPollRecords bounds the records taken per poll, which bounds how
	// long a rebalance waits for the poll loop. Default 1000.
	MaxPollRecords int
	// Logger receives the subscriber's logs: fetch retries, skipped records,
	// failed commits. Nil logs to slog.Default(), so that a skipped or
	// undecodable event is never silent.
	Logger *slog.Logger
}

func (c *SubscriberConfig) setDefaults() {
	if c.CommitInterval == 0 {
		c.CommitInterval = time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = 1000
	}
}

// Validate reports every problem of the configuration at once.
func (c *SubscriberConfig) Validate() error {
	var problems []error
	if err := c.Kafka.Validate(); err != nil {
		problems = append(problems, err)
	}
	if len(c.Prefixes) == 0 {
		problems = append(problems, errors.New("no Prefixes: name the aggregate types to read, e.g. \"orders\""))
	}
	for _, p := range c.Prefixes {
		if p == "" {
			problems = append(problems, errors.New("an empty prefix in Prefixes"))
		}
	}
	if c.Decoder == nil {
		problems = append(problems, errors.New("no Decoder: pass an *aggregates.Registry or the aggregates.Kind of the events"))
	}
	if c.Handler == nil {
		problems = append(problems, errors.New("no Handler: set the function that receives the events"))
	}
	if c.CommitInterval < 100*time.Millisecond {
		problems = append(problems, fmt.Errorf("CommitInterval %v is below the 100ms franz-go allows", c.CommitInterval))
	}
	if c.ShutdownTimeout < 0 || c.MaxPollRecords < 0 {
		problems = append(problems, errors.New("ShutdownTimeout and MaxPollRecords must not be negative"))
	}
	for _, id := range c.AggregateIDs {
		if id == "" {
			problems = append(problems, errors.New("an empty aggregate id in AggregateIDs"))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("subscriber config: %w", errors.Join(problems...))
	}
	return nil
}

// Subscriber reads events topics and hands each event to a Handler, with
// one goroutine per partition, started when the partition is first fetched
// and stopped when it is revoked or Run returns. It reads with
// read_committed, so events of aborted processor transactions are never
// seen. Delivery is at least once: an event whose handler returned nil is
// marked done and committed afterwards; after a crash or rebalance, events
// handled but not yet committed are delivered again. A record that cannot be
// decoded stops Run (SubscriberConfig.SkipUndecodable says otherwise), and
// nothing at or after it in its partition is committed: no event is ever
// passed over silently.
type Subscriber struct {
	cfg    SubscriberConfig
	log    *slog.Logger
	topics []string
	ran    atomic.Bool
}

// NewSubscriber validates cfg and returns a Subscriber. It does not contact
// the brokers; Run does.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Subscriber{cfg: cfg, log: log}
	for _, p := range cfg.Prefixes {
		s.topics = append(s.topics, topics.For(p).Events)
	}
	return s, nil
}

// Run reads events until ctx ends, then stops every partition goroutine
// (waiting for running handlers, which see their context end), commits the
// offsets of handled events within ShutdownTimeout, leaves the group, and
// returns nil.
// It returns early with an error when a topic is missing, when a handler
// fails, when a record cannot be decoded (unless SkipUndecodable; the error
// then unwraps to its *RecordError), or when Kafka refuses access. Run may be
// called once.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("Subscriber.Run was already called: create a new Subscriber to read again")
	}
	counts, err := s.partitionCounts(ctx)
	if err != nil {
		return err
	}
	r := &subscription{s: s, workers: map[topicPartition]*partitionWorker{}}
	if len(s.cfg.AggregateIDs) > 0 {
		r.only = make(map[string]struct{}, len(s.cfg.AggregateIDs))
		for _, id := range s.cfg.AggregateIDs {
			r.only[id] = struct{}{}
		}
	}
	r.ctx, r.cancel = context.WithCancelCause(ctx)
	defer r.cancel(nil)

	start := kgo.NewOffset().AtEnd()
	if s.cfg.FromBeginning {
		start = kgo.NewOffset().AtStart()
	}
	opts := []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(start)}
	switch {
	case s.cfg.Group != "":
		opts = append(opts,
			kgo.ConsumerGroup(s.cfg.Group), kgo.ConsumeTopics(s.topics...),
			kgo.AutoCommitMarks(), kgo.AutoCommitInterval(s.cfg.CommitInterval),
			kgo.BlockRebalanceOnPoll(),
			kgo.OnPartitionsRevoked(r.revoked), kgo.OnPartitionsLost(r.lost),
		)
	case r.only != nil:
		owner := topics.NewOwner()
		parts := map[string]map[int32]kgo.Offset{}
		for _, t := range s.topics {
			parts[t] = map[int32]kgo.Offset{}
			for id := range r.only {
				parts[t][owner.Of([]byte(id), counts[t])] = start
			}
		}
		opts = append(opts, kgo.ConsumePartitions(parts))
	default:
		opts = append(opts, kgo.ConsumeTopics(s.topics...))
	}
	cl, err := s.cfg.Kafka.newClient(opts...)
	if err != nil {
		return err
	}
	r.cl = cl
	r.group = s.cfg.Group != ""

	r.poll()

	// Shutdown: stop every partition, then commit what they handled.
	r.mu.Lock()
	all := make([]topicPartition, 0, len(r.workers))
	for tp := range r.workers {
		all = append(all, tp)
	}
	r.mu.Unlock()
	r.stop(all)
	r.wg.Wait()
	var commitErr error
	if r.group {
		cctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		if err := cl.CommitMarkedOffsets(cctx); err != nil {
			commitErr = fmt.Errorf("committing the offsets of handled events of group %q: %w; those events will be delivered again", s.cfg.Group, err)
		}
		cancel()
	}
	cl.CloseAllowingRebalance()
	if cause := context.Cause(r.ctx); cause != nil && ctx.Err() == nil {
		return errors.Join(cause, commitErr) // a handler or Kafka failed
	}
	return commitErr
}

// partitionCounts checks that every events topic exists and returns its
// partition count.
func (s *Subscriber) partitionCounts(ctx context.Context) (map[string]int32, error) {
	cl, err := s.cfg.Kafka.newClient()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	out := map[string]int32{}
	for _, t := range s.topics {
		ends, err := partitionOffsets(ctx, adm.ListEndOffsets, t)
		if err != nil {
			return nil, fmt.Errorf("subscribing: %w", err)
		}
		out[t] = int32(len(ends))
	}
	return out, nil
}

type topicPartition struct {
	topic     string
	partition int32
}

// subscription is one Run: the client, its poll loop and the partition
// goroutines.
type subscription struct {
	s      *Subscriber
	cl     *kgo.Client
	group  bool
	only   map[string]struct{} // aggregate ids to handle; nil: all
	ctx    context.Context     // ends the poll loop and every worker
	cancel context.CancelCauseFunc

	wg      sync.WaitGroup // workers
	mu      sync.Mutex
	workers map[topicPartition]*partitionWorker
}

// partitionWorker handles the records of one partition in order.
type partitionWorker struct {
	tp     topicPartition
	recs   chan []*kgo.Record
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// poll fetches until the subscription's context ends, handing each
// partition's records to its worker.
func (r *subscription) poll() {
	for {
		fs := r.cl.PollRecords(r.ctx, r.s.cfg.MaxPollRecords)
		if r.ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, part int32, err error) {
			var (
				ke      *kerr.Error
				session *kgo.ErrGroupSession
			)
			switch {
			case errors.As(err, &session) && !deniedAccess(err):
				// Kicked out of the group (an expired session, a
				// handler that held a rebalance back too long): the
				// client rejoins by itself; the lost partitions' work
				// stops (lost) and resumes from the committed offsets.
				r.s.log.Warn("subscriber lost its consumer group session; rejoining", "group", r.s.cfg.Group, "err", err)
			case session != nil:
				r.cancel(fmt.Errorf("consumer group %q: %w; check the ACLs", r.s.cfg.Group, err))
			case errors.As(err, &ke) && !ke.Retriable:
				r.cancel(fmt.Errorf("reading %s/%d: %w; check the ACLs and the topic", topic, part, err))
			default:
				r.s.log.Warn("fetching events failed; retrying", "topic", topic, "partition", part, "err", err)
			}
		})
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 || r.ctx.Err() != nil {
				return
			}
			w := r.worker(topicPartition{p.Topic, p.Partition})
			select {
			case w.recs <- p.Records:
			case <-w.done:
				// Lost meanwhile (lost partitions are not held
				// back by BlockRebalanceOnPoll); the new owner
				// reads these records.
			case <-r.ctx.Done():
			}
		})
		r.cl.AllowRebalance()
	}
}

// worker returns the partition's worker, starting it on first use. With
// BlockRebalanceOnPoll, a partition in a poll's fetches is assigned until the
// poll loop allows a rebalance, so a revoked partition's worker is never
// restarted by stale records.
func (r *subscription) worker(tp topicPartition) *partitionWorker {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.workers[tp]; ok {
		return w
	}
	ctx, cancel := context.WithCancel(r.ctx)
	w := &partitionWorker{tp: tp, recs: make(chan []*kgo.Record, 4), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	r.workers[tp] = w
	r.wg.Add(1)
	go r.work(w)
	return w
}

// work handles w's records until w is stopped or a handler fails.
func (r *subscription) work(w *partitionWorker) {
	defer r.wg.Done()
	defer close(w.done)
	for {
		select {
		case <-w.ctx.Done():
			return
		case recs := <-w.recs:
			for _, rec := range recs {
				if w.ctx.Err() != nil {
					return
				}
				if err := r.handle(w.ctx, rec); err != nil {
					if w.ctx.Err() == nil {
						r.cancel(err)
					}
					return // not marked: delivered again after a restart
				}
				if r.group {
					r.cl.MarkCommitRecords(rec)
				}
			}
		}
	}
}

// handle decodes one record and calls the handler, unless the record is of
// an aggregate the subscription does not want.
func (r *subscription) handle(ctx context.Context, rec *kgo.Record) error {
	if r.only != nil {
		if id, ok := topics.EventKeyAggregate(rec.Key); ok {
			if _, want := r.only[string(id)]; !want {
				return nil
			}
		}
	}
	e, err := r.s.cfg.Decoder.DecodeEvent(rec.Value)
	if err != nil {
		re := NewRecordError(rec, e, err)
		if r.s.cfg.OnError != nil {
			r.s.cfg.OnError(ctx, re)
		}
		if !r.s.cfg.SkipUndecodable {
			return fmt.Errorf("%w; the subscriber stops here and does not commit past it, so a restart reads it again: "+
				"deploy code that decodes it (the aggregate's newer version, with its upcasters), or set SkipUndecodable to pass over such records", re)
		}
		r.s.log.Warn("skipping an event record that cannot be decoded (SkipUndecodable is set); this consumer will not see its event",
			"topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "type", re.EventType, "schema_version", re.SchemaVersion, "err", err)
		return nil
	}
	if r.only != nil {
		if _, want := r.only[e.Subject]; !want {
			return nil
		}
	}
	if err := callHandler(ctx, r.s.cfg.Handler, e); err != nil {
		return fmt.Errorf("handler failed on event %s (%s version %d of %q) at %s/%d offset %d: %w; "+
			"its offset is not committed, so it is delivered again after a restart: fix the handler or what it depends on",
			e.ID, e.Type, e.Version, e.Subject, rec.Topic, rec.Partition, rec.Offset, err)
	}
	return nil
}

// callHandler calls h, turning a panic into an error so that Run can stop
// cleanly and commit what was handled before.
func callHandler(ctx context.Context, h Handler, e aggregates.Event) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return h(ctx, e)
}

// stop cancels the workers of tps and waits for them to return.
func (r *subscription) stop(tps []topicPartition) {
	r.mu.Lock()
	var ws []*partitionWorker
	for _, tp := range tps {
		if w, ok := r.workers[tp]; ok {
			delete(r.workers, tp)
			w.cancel()
			ws = append(ws, w)
		}
	}
	r.mu.Unlock()
	for _, w := range ws {
		<-w.done
	}
}

// revoked stops the revoked partitions' workers and commits what they
// handled, before the partitions move to another member.
func (r *subscription) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	r.stop(flatten(revoked))
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		r.s.log.Warn("committing offsets on revoke failed; their events will be delivered again", "group", r.s.cfg.Group, "err", err)
	}
}

// lost stops the lost partitions' workers; their offsets cannot be
// committed any more.
func (r *subscription) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	r.stop(flatten(lost))
}

func flatten(m map[string][]int32) []topicPartition {
	var out []topicPartition
	for t, ps := range m {
		for _, p := range ps {
			out = append(out, topicPartition{t, p})
		}
	}
	return out
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

// deniedAccess reports whether Kafka refused the client access, which no
// retry mends.
func deniedAccess(err error) bool {
	return errors.Is(err, kerr.GroupAuthorizationFailed) || errors.Is(err, kerr.TopicAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed)
}
