package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/topics"
)

// Config configures a Projection. Zero values take the documented defaults;
// New reports every problem at once.
type Config[Tx any] struct {
	// Name identifies the projection: its positions in the Store, and its
	// consumer group unless Group is set. Required; changing it starts a
	// new projection from the beginning.
	Name string
	// Kafka says how to reach the brokers.
	Kafka client.Kafka
	// Prefixes name the aggregate types whose "<prefix>.events" topics are
	// read, e.g. "orders".
	Prefixes []string
	// Decoder decodes (and upcasts) event records: the aggregates.Kind, or
	// an *aggregates.Registry of every type read.
	Decoder client.EventDecoder
	// Store holds the read model and the positions (required).
	Store Store[Tx]
	// Handlers apply the events, one per payload type (made with On).
	// Events without a handler are passed over; their positions still move.
	Handlers []Handler[Tx]
	// Reset empties the read model for Rebuild, inside Rebuild's
	// transaction (e.g. TRUNCATE its tables). Nil: Rebuild refuses.
	Reset func(ctx context.Context, tx Tx) error

	// Group is the Kafka consumer group that shares the partitions among
	// the running instances. Default "projection." + Name. The group only
	// assigns partitions: positions live in the Store, and nothing is
	// committed to Kafka.
	Group string
	// SkipUndecodable passes over records that cannot be decoded: the
	// position moves past each (so the skip is recorded in the Store) and
	// a warning names it. False (the default) is strict: such a record
	// stops Run with an error naming its topic, partition, offset, type and
	// schema version, and the position stays at it, so a restart with code
	// that reads it (a newer release with its upcasters) applies it.
	SkipUndecodable bool
	// BatchSize bounds the records applied in one transaction. Default 500.
	BatchSize int
	// Logger receives the projection's logs (assignments, conflicts,
	// skipped records). Nil logs to slog.Default().
	Logger *slog.Logger
}

// Projection turns the events topics of some aggregate types into a read
// model in a database, applying each event's effect exactly once.
//
// # Invariants
//
// The Store holds, for every partition read, the offset of the next record
// to apply (its position). Every record before the position has been
// applied to the read model exactly once, and none at or after it, because:
//
//   - The records of one poll (at most BatchSize) are applied in one
//     database transaction that also moves the positions of their
//     partitions: the effect and the position commit together or not at
//     all.
//   - On assignment, an instance reads the positions of its partitions from
//     the Store and seeks there (no position: the beginning). Kafka's
//     committed offsets play no part, and none are written.
//   - A position moves only from the value the instance last read or
//     wrote (UPDATE ... WHERE next = old). If another instance, a zombie
//     that lost the partition, or a Rebuild moved it, the transaction
//     changes nothing; the instance reloads the positions, seeks there and
//     goes on. Records below a partition's position are never applied.
//   - Positions only move forward, to the offset after a batch's last
//     record; only Rebuild deletes them. A position may therefore point at
//     a transaction marker or at records of an aborted transaction, which
//     no read returns: the next record read is the same.
//   - Events are read with read_committed: events of aborted processor
//     transactions are never seen.
//   - Losing the consumer group session (kicked after a session timeout,
//     or after a batch held a rebalance back too long) is no error: the
//     client rejoins and the assignment reads the positions again.
//
// # Crash points
//
// A crash before a batch's commit (before its transaction begins, after
// the positions moved, in or after the handlers) loses the transaction,
// read model and positions alike: the restart reads the batch again from
// the old position. A crash after the commit keeps both: the restart goes
// on after the batch; so does the instance itself when the commit landed
// but was reported as failed with a conflict (it reloads the positions).
// A crash during the commit is the database's atomic commit. No point
// applies an event twice or skips one. Stopping Run (its context ending)
// at any point, also while it starts, acts as such a crash and returns nil.
//
// The model test in projection/postgres (model_test.go) checks these
// invariants after every step of random runs of real instances on Kafka
// (kfake) and PostgreSQL, with crashes injected at each of these points,
// twins in one group and in two, aborted transactions, undecodable events
// and Rebuilds; a store that commits the read model and the positions in
// two transactions, or moves positions unconditionally, fails it.
//
// # Errors
//
// A handler's error or panic rolls its batch back and stops Run; so does a
// record that cannot be decoded, unless SkipUndecodable (the position then
// stays at that record, or at transaction markers just before it, and the
// batch's earlier records are committed). Restarting retries from the
// stored positions.
type Projection[Tx any] struct {
	cfg      Config[Tx]
	log      *slog.Logger
	topics   []string
	handlers map[reflect.Type]Handler[Tx]
	ran      atomic.Bool
}

// New validates cfg and returns a Projection. It does not contact Kafka or
// the database; Run and Rebuild do.
func New[Tx any](cfg Config[Tx]) (*Projection[Tx], error) {
	if cfg.Group == "" && cfg.Name != "" {
		cfg.Group = "projection." + cfg.Name
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 500
	}
	var problems []error
	if cfg.Name == "" {
		problems = append(problems, errors.New("no Name: name the projection, e.g. \"order_summaries\" (its positions are stored under it)"))
	}
	if err := cfg.Kafka.Validate(); err != nil {
		problems = append(problems, err)
	}
	if len(cfg.Prefixes) == 0 {
		problems = append(problems, errors.New("no Prefixes: name the aggregate types to read, e.g. \"orders\""))
	}
	if slices.Contains(cfg.Prefixes, "") {
		problems = append(problems, errors.New("an empty prefix in Prefixes"))
	}
	if cfg.Decoder == nil {
		problems = append(problems, errors.New("no Decoder: pass the aggregates.Kind of the events (e.g. order.Definition()) or an *aggregates.Registry"))
	}
	if cfg.Store == nil {
		problems = append(problems, errors.New("no Store: pass the database's store, e.g. from projection/postgres.NewStore"))
	}
	if cfg.BatchSize < 0 {
		problems = append(problems, fmt.Errorf("BatchSize %d is negative", cfg.BatchSize))
	}
	p := &Projection[Tx]{cfg: cfg, log: cfg.Logger, handlers: map[reflect.Type]Handler[Tx]{}}
	if p.log == nil {
		p.log = slog.Default()
	}
	for _, h := range cfg.Handlers {
		switch {
		case h.fn == nil:
			problems = append(problems, errors.New("a zero Handler: make handlers with projection.On"))
			continue
		case p.handlers[h.typ].fn != nil:
			problems = append(problems, fmt.Errorf("two handlers for %v: keep one", h.typ))
		}
		if known, checkable := knownEvent(cfg.Decoder, h.typ); checkable && !known {
			problems = append(problems, fmt.Errorf("the handler of %v would never run: it is not an event payload type of the Decoder's aggregates", h.typ))
		}
		p.handlers[h.typ] = h
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("projection config: %w", errors.Join(problems...))
	}
	for _, pre := range cfg.Prefixes {
		p.topics = append(p.topics, topics.For(pre).Events)
	}
	return p, nil
}

// Rebuild empties the read model (Config.Reset) and deletes the projection's
// positions in one transaction, so that the next Run replays every event from
// the beginning. Run it while no instance of the projection runs: a running
// instance notices only when it next commits (its position is gone, so it
// reloads and starts over), and until then its idle partitions stay empty.
func (p *Projection[Tx]) Rebuild(ctx context.Context) error {
	if p.cfg.Reset == nil {
		return fmt.Errorf("rebuilding projection %q: no Config.Reset says how to empty its read model", p.cfg.Name)
	}
	if err := p.cfg.Store.Reset(ctx, p.cfg.Name, p.cfg.Reset); err != nil {
		return fmt.Errorf("rebuilding projection %q: %w", p.cfg.Name, err)
	}
	p.log.Info("projection reset: the next run replays every event", "projection", p.cfg.Name)
	return nil
}

// Run applies events until ctx ends, then leaves the group and returns nil.
// It returns early with an error when a topic is missing, when the Store
// fails, when a handler fails, when a record cannot be decoded (unless
// SkipUndecodable; the error then unwraps to a *client.RecordError), or when
// Kafka refuses access. Run may be called once.
func (p *Projection[Tx]) Run(ctx context.Context) error {
	if !p.ran.CompareAndSwap(false, true) {
		return errors.New("Projection.Run was already called: create a new Projection to run again")
	}
	if err := p.checkTopics(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	r := &run[Tx]{p: p, next: map[topicPartition]int64{}}
	var cancel context.CancelCauseFunc
	r.ctx, cancel = context.WithCancelCause(ctx)
	defer cancel(nil)
	r.fail = cancel
	opts := []kgo.Opt{kgo.SeedBrokers(p.cfg.Kafka.Brokers...)}
	opts = append(opts, p.cfg.Kafka.Options...)
	opts = append(opts,
		kgo.ConsumerGroup(p.cfg.Group), kgo.ConsumeTopics(p.topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(r.assigned),
		kgo.OnPartitionsRevoked(r.dropped), kgo.OnPartitionsLost(r.dropped),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("creating Kafka client for %v: %w", p.cfg.Kafka.Brokers, err)
	}
	r.cl = cl
	err = r.loop()
	cl.CloseAllowingRebalance()
	if err != nil {
		return err
	}
	if cause := context.Cause(r.ctx); cause != nil && ctx.Err() == nil {
		return cause // a callback failed
	}
	return nil
}

// checkTopics fails when an events topic does not exist.
func (p *Projection[Tx]) checkTopics(ctx context.Context) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(p.cfg.Kafka.Brokers...)}, p.cfg.Kafka.Options...)...)
	if err != nil {
		return fmt.Errorf("creating Kafka client for %v: %w", p.cfg.Kafka.Brokers, err)
	}
	defer cl.Close()
	details, err := kadm.NewClient(cl).ListTopics(ctx, p.topics...)
	if err != nil {
		return fmt.Errorf("projection %q: listing topics %v: %w", p.cfg.Name, p.topics, err)
	}
	var missing []string
	for _, t := range p.topics {
		if d, ok := details[t]; !ok || d.Err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("projection %q: topics %s: %w: create them with `chronicle topics <prefix> --create`", p.cfg.Name, strings.Join(missing, ", "), client.ErrTopicMissing)
	}
	return nil
}

type topicPartition struct {
	topic     string
	partition int32
}

// run is one Run: the client, the positions of the owned partitions and
// the loop that applies batches.
type run[Tx any] struct {
	p    *Projection[Tx]
	cl   *kgo.Client
	ctx  context.Context
	fail context.CancelCauseFunc

	mu   sync.Mutex
	next map[topicPartition]int64 // owned partitions → stored position (-1: none)
}

// assigned is called by the group once offsets of newly assigned partitions
// are fetched: it replaces them with the positions in the Store.
func (r *run[Tx]) assigned(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	stored, err := r.p.cfg.Store.Positions(ctx, r.p.cfg.Name)
	if err != nil {
		err = fmt.Errorf("projection %q: reading positions for newly assigned partitions: %w", r.p.cfg.Name, err)
		r.fail(err)
		return nil, err
	}
	pos := positionMap(stored)
	r.mu.Lock()
	defer r.mu.Unlock()
	var logged []any
	for t, parts := range offsets {
		for part := range parts {
			tp := topicPartition{t, part}
			next, ok := pos[tp]
			if ok {
				parts[part] = kgo.NewOffset().At(next).WithEpoch(-1)
			} else {
				next = -1
				parts[part] = kgo.NewOffset().AtStart()
			}
			r.next[tp] = next
			logged = append(logged, fmt.Sprintf("%s/%d", t, part), next)
		}
	}
	r.p.log.Info("projection assigned partitions; positions from the store (-1: from the beginning)", append([]any{"projection", r.p.cfg.Name}, logged...)...)
	return offsets, nil
}

// dropped forgets revoked or lost partitions: their records in a poll are
// no longer applied here.
func (r *run[Tx]) dropped(_ context.Context, _ *kgo.Client, gone map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for t, parts := range gone {
		for _, part := range parts {
			delete(r.next, topicPartition{t, part})
		}
	}
}

func positionMap(ps []Position) map[topicPartition]int64 {
	m := make(map[topicPartition]int64, len(ps))
	for _, p := range ps {
		m[topicPartition{p.Topic, p.Partition}] = p.Next
	}
	return m
}

// loop polls and applies batches until the run's context ends or something
// fails.
func (r *run[Tx]) loop() error {
	for {
		fs := r.cl.PollRecords(r.ctx, r.p.cfg.BatchSize)
		if r.ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		var fatal error
		fs.EachError(func(topic string, part int32, err error) {
			var (
				ke      *kerr.Error
				session *kgo.ErrGroupSession
			)
			switch {
			case errors.Is(err, context.Canceled):
			case errors.As(err, &session) && !deniedAccess(err):
				// Kicked from the group (a session that expired, a
				// batch that held a rebalance back too long): the
				// client rejoins, and the assignment reloads the
				// positions from the Store.
				r.p.log.Warn("projection lost its consumer group session; rejoining, its partitions go on from the positions in the store",
					"projection", r.p.cfg.Name, "group", r.p.cfg.Group, "err", err)
			case session != nil:
				fatal = fmt.Errorf("projection %q: consumer group %q: %w; check the ACLs", r.p.cfg.Name, r.p.cfg.Group, err)
			case errors.As(err, &ke) && !ke.Retriable:
				fatal = fmt.Errorf("projection %q: reading %s/%d: %w; check the ACLs and the topic", r.p.cfg.Name, topic, part, err)
			default:
				r.p.log.Warn("fetching events failed; retrying", "projection", r.p.cfg.Name, "topic", topic, "partition", part, "err", err)
			}
		})
		if fatal != nil {
			return fatal
		}
		err := r.apply(fs)
		r.cl.AllowRebalance()
		if err != nil {
			return err
		}
	}
}

// deniedAccess reports whether Kafka refused the client access, which no
// retry mends.
func deniedAccess(err error) bool {
	return errors.Is(err, kerr.GroupAuthorizationFailed) || errors.Is(err, kerr.TopicAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed)
}

// item is one decoded event of a batch, with where it was read.
type item struct {
	rec *kgo.Record
	e   aggregates.Event
}

// apply applies one poll's records in one transaction.
func (r *run[Tx]) apply(fs kgo.Fetches) error {
	name := r.p.cfg.Name
	r.mu.Lock()
	owned := make(map[topicPartition]int64, len(r.next))
	for tp, n := range r.next {
		owned[tp] = n
	}
	r.mu.Unlock()

	var (
		moves   []Move
		items   []item
		skipped []*client.RecordError
		stop    error
	)
	fs.EachPartition(func(fp kgo.FetchTopicPartition) {
		tp := topicPartition{fp.Topic, fp.Partition}
		from, ok := owned[tp]
		if !ok || len(fp.Records) == 0 {
			return // revoked or lost meanwhile: its new owner reads these
		}
		to := int64(-1)
		for _, rec := range fp.Records {
			if rec.Offset < from {
				continue // applied already (a fetch from before a seek)
			}
			e, err := r.p.cfg.Decoder.DecodeEvent(rec.Value)
			if err != nil {
				re := client.NewRecordError(rec, e, err)
				if !r.p.cfg.SkipUndecodable {
					stop = errors.Join(stop, fmt.Errorf("projection %q: %w; it stops here and its position stays at offset %d, so a restart reads it again: "+
						"deploy code that decodes it (the aggregate's newer version, with its upcasters), or set SkipUndecodable to pass over such records",
						name, re, rec.Offset))
					break
				}
				skipped = append(skipped, re)
				to = rec.Offset + 1
				continue
			}
			items = append(items, item{rec, e})
			to = rec.Offset + 1
		}
		if to > from {
			moves = append(moves, Move{Topic: fp.Topic, Partition: fp.Partition, From: from, To: to})
		}
	})
	if len(moves) == 0 {
		return stop
	}
	slices.SortFunc(moves, func(a, b Move) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	err := r.p.cfg.Store.Commit(r.ctx, name, moves, func(ctx context.Context, tx Tx) error {
		for _, it := range items {
			if err := r.handle(ctx, tx, it); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrConflict):
		r.p.log.Warn("projection position moved by another writer (another instance, a zombie or a rebuild); the batch was rolled back, reloading positions",
			"projection", name, "err", err)
		if err := r.reload(moves); err != nil {
			return err
		}
		return stop
	case err != nil:
		if r.ctx.Err() != nil {
			return nil // stopping: the batch was rolled back and is read again
		}
		return fmt.Errorf("projection %q: applying a batch of %d events: %w; the batch was rolled back and its positions stay, so a restart retries it", name, len(items), err)
	}
	r.mu.Lock()
	for _, m := range moves {
		if _, ok := r.next[topicPartition{m.Topic, m.Partition}]; ok {
			r.next[topicPartition{m.Topic, m.Partition}] = m.To
		}
	}
	r.mu.Unlock()
	for _, re := range skipped {
		r.p.log.Warn("projection skipped an event record that cannot be decoded (SkipUndecodable is set); its position moved past it",
			"projection", name, "topic", re.Topic, "partition", re.Partition, "offset", re.Offset, "type", re.EventType, "schema_version", re.SchemaVersion, "err", re.Err)
	}
	return stop
}

// handle calls the handler of one event, turning a panic into an error.
func (r *run[Tx]) handle(ctx context.Context, tx Tx, it item) (err error) {
	h, ok := r.p.handlers[reflect.TypeOf(it.e.Data)]
	if !ok {
		return nil
	}
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panicked: %v", v)
		}
		if err != nil {
			err = fmt.Errorf("handler of %s failed on event %s (version %d of %q) at %s/%d offset %d: %w",
				it.e.Type, it.e.ID, it.e.Version, it.e.Subject, it.rec.Topic, it.rec.Partition, it.rec.Offset, err)
		}
	}()
	return h.fn(ctx, tx, it.e)
}

// reload reads the positions of the owned partitions from the Store and
// seeks there: every partition of the rolled-back batch (the consumer has
// read past its records, which must be read again), and every other whose
// position changed.
func (r *run[Tx]) reload(batch []Move) error {
	stored, err := r.p.cfg.Store.Positions(r.ctx, r.p.cfg.Name)
	if err != nil {
		if r.ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("projection %q: reloading positions after a conflict: %w", r.p.cfg.Name, err)
	}
	pos := positionMap(stored)
	seek := map[string]map[int32]kgo.EpochOffset{}
	inBatch := make(map[topicPartition]bool, len(batch))
	for _, m := range batch {
		inBatch[topicPartition{m.Topic, m.Partition}] = true
	}
	r.mu.Lock()
	for tp, cur := range r.next {
		next, ok := pos[tp]
		if !ok {
			next = -1
		}
		if next == cur && !inBatch[tp] {
			continue
		}
		r.next[tp] = next
		if seek[tp.topic] == nil {
			seek[tp.topic] = map[int32]kgo.EpochOffset{}
		}
		seek[tp.topic][tp.partition] = kgo.EpochOffset{Epoch: -1, Offset: max(next, 0)}
	}
	r.mu.Unlock()
	r.cl.SetOffsets(seek)
	return nil
}
