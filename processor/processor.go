// Package processor is Chronicle's Kafka engine. It consumes commands from
// each aggregate type's commands topic in a consumer group, lets the
// aggregates decide, and writes their events, latest states and one result
// per command — together with the consumed offsets — in one Kafka
// transaction, so every command takes effect exactly once.
//
// # Ownership and order
//
// An aggregate is owned by partition murmur2(aggregate id) mod N of its
// commands topic; its events and state live in the same partition number of
// the events and state topics. A command that arrives on another partition is
// forwarded to its owner in the same transaction. Partitions are processed in
// parallel (bounded by Config.Concurrency); the commands of one partition, and
// so of one aggregate, strictly in order.
//
// # State
//
// When a partition is assigned, its fetching is paused until its aggregates
// are restored from the events partition (read_committed, after any
// in-doubt transaction on it has ended). If a transaction aborts, the state of
// every partition it touched is discarded and restored again, so memory never
// runs ahead of what Kafka committed.
package processor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/topics"
)

// Processor runs aggregates against Kafka. Create it with New and start it
// with Run.
type Processor struct {
	cfg      Config
	log      *slog.Logger
	bindings map[string]*binding // by commands topic
	owner    topics.Owner

	// mu guards parts and the paused/restoring bookkeeping.
	mu    sync.Mutex
	parts map[topicPartition]*partition

	// batchMu is held while workers process a batch; a revoke waits for it
	// so that no partition is handled after it was given away.
	batchMu sync.Mutex

	// restores are owned by Run: started on assignment, joined on exit.
	restoreWG  sync.WaitGroup
	restoreCtx context.Context // guarded by mu
	// fenced (guarded by mu) is closed once the session's transactional producer fenced
	// its predecessor: restores wait for it, since a dead predecessor's
	// open transaction would otherwise hold them up to its timeout.
	fenced chan struct{}
	// assignment is this member's whole assignment as of the last
	// SyncGroup (see trackingBalancer); revoked is set by the revoke and
	// lost callbacks until the loop re-arms them with an idle End.
	assignment  atomic.Pointer[map[string][]int32]
	revokedSeen atomic.Bool
	// lastTopicCheck is when checkTopics last ran (main loop only), every
	// topicCheckEvery.
	lastTopicCheck  time.Time
	topicCheckEvery time.Duration
	// materializeStep is how many deferred aggregates a checkpoint between
	// transactions loads (see aggState.checkpointStep); 0 is
	// materializeBatch. Tests lower it.
	materializeStep int
	sess            atomic.Pointer[kgo.GroupTransactSession]
	adm             *kadm.Client
	baseClient      *kgo.Client

	// writer saves snapshots and checkpoints; nil without a store.
	writer *writer

	// txnErr is the first produce error of the open transaction.
	txnErr atomic.Pointer[error]

	stats counters

	// crash, when closed, makes Run stop at once without ending its
	// transaction, as a killed process would (for tests).
	crash     chan struct{}
	crashOnce sync.Once

	ready     chan struct{} // closed once the topics exist and the group is joined
	readyOnce sync.Once
	// For Status and Readiness: Run is running, it created or checked the
	// topics, and a session runs (its transactional producer initialised;
	// the group is joined once assignment is set too).
	started, topicsValid, running atomic.Bool

	promiseFn func(*kgo.Record, error) // p.promise, bound once: a method value allocates
}

type topicPartition struct {
	topic     string
	partition int32
}

// New validates cfg and returns a Processor.
func New(cfg Config) (*Processor, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("processor config: %w", err)
	}
	p := &Processor{
		cfg: cfg, log: cfg.Logger, bindings: map[string]*binding{}, owner: topics.NewOwner(),
		parts: map[topicPartition]*partition{}, crash: make(chan struct{}), ready: make(chan struct{}),
		topicCheckEvery: topicCheckEvery,
	}
	p.promiseFn = p.promise
	for _, b := range cfg.Aggregates {
		names := topics.For(b.Prefix)
		bd := &binding{kind: b.Kind, names: names}
		for _, t := range b.Kind.CommandTypes() {
			short := strings.TrimPrefix(t, b.Kind.Name()+".")
			bd.commandTypes = append(bd.commandTypes, short, b.Kind.Name()+"."+short)
		}
		p.bindings[names.Commands] = bd
	}
	return p, nil
}

func (p *Processor) kafkaOpts(extra ...kgo.Opt) []kgo.Opt {
	// No lingering: a transaction's records go out while the rest of its
	// batch is decided, rather than all at once when End flushes them.
	// With at most five produce requests in flight per broker (franz-go's
	// limit with idempotence), they still batch while those are on their
	// way.
	opts := []kgo.Opt{kgo.SeedBrokers(p.cfg.Brokers...), kgo.WithLogger(kgoLogger{p.log}), kgo.ProducerLinger(0)}
	opts = append(opts, p.cfg.KafkaOptions...)
	return append(opts, extra...)
}

// Run creates or checks the topics, joins the group and processes commands
// until ctx is cancelled; then it ends the open transaction and leaves the
// group within Config.ShutdownTimeout. It returns nil after a clean shutdown
// and an error when it cannot start (unreachable brokers, topics that do not
// fit). Failures while running (broker outages, fenced transactions) are
// logged and recovered from by starting a new session.
func (p *Processor) Run(ctx context.Context) error {
	p.started.Store(true)
	defer p.started.Store(false)
	defer p.topicsValid.Store(false)
	base, err := kgo.NewClient(p.kafkaOpts()...)
	if err != nil {
		return fmt.Errorf("creating kafka client: %w", err)
	}
	defer base.Close()
	p.baseClient = base
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = base.Ping(pingCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("connecting to Kafka %v: %w (check the broker addresses and the TLS and SASL settings)", p.cfg.Brokers, err)
	}
	p.adm = kadm.NewClient(base)
	for _, b := range p.bindings {
		n, err := topics.Ensure(ctx, base, b.names, topics.Spec{Partitions: p.cfg.Partitions, ReplicationFactor: p.cfg.ReplicationFactor})
		if err != nil {
			return fmt.Errorf("preparing topics of %q: %w", b.names.Prefix, err)
		}
		b.n = n
		td, err := p.adm.ListTopics(ctx, b.names.Events)
		if err != nil || td[b.names.Events].Err != nil {
			return fmt.Errorf("describing %s: %w", b.names.Events, errors.Join(err, td[b.names.Events].Err))
		}
		b.eventsTopicID = td[b.names.Events].ID.String()
		if err := topics.ClaimGroup(ctx, base, b.names, p.cfg.Group, p.cfg.TakeOver); err != nil {
			return fmt.Errorf("claiming the topics of %q for group %q: %w", b.names.Prefix, p.cfg.Group, err)
		}
		p.log.Info("topics ready", "prefix", b.names.Prefix, "partitions", n, "group", p.cfg.Group)
	}
	p.topicsValid.Store(true)
	p.readyOnce.Do(func() { close(p.ready) })
	// The writer outlives sessions: checkpoints taken when a session ends
	// (revokes) are still written after it.
	if p.cfg.Snapshots != nil {
		p.writer = newWriter(p.cfg.Snapshots, p.log, &p.stats)
		wctx, cancelWriter := context.WithCancel(context.Background())
		writerDone := make(chan struct{})
		go func() { defer close(writerDone); p.writer.run(wctx) }()
		defer func() {
			if !p.crashed() {
				dctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
				p.writer.drain(dctx)
				cancel()
			}
			cancelWriter()
			<-writerDone
		}()
	}
	backoff := 100 * time.Millisecond
	defer p.running.Store(false)
	for {
		err := p.runSession(ctx)
		if ctx.Err() != nil || p.crashed() {
			return nil
		}
		if errors.Is(err, errFatal) {
			return err
		}
		p.log.Error("processing session failed; starting a new one", "err", err, durationAttr("retry_in", backoff))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (p *Processor) crashed() bool {
	select {
	case <-p.crash:
		return true
	default:
		return false
	}
}

// runSession runs one group transact session until ctx ends or the session
// fails. All in-memory state is dropped when it returns.
func (p *Processor) runSession(ctx context.Context) (err error) {
	commandTopics := make([]string, 0, len(p.bindings))
	for t := range p.bindings {
		commandTopics = append(commandTopics, t)
	}
	restoreCtx, cancelRestores := context.WithCancel(context.Background())
	fenced := make(chan struct{})
	p.mu.Lock() // a former session's client may still call assigned
	p.restoreCtx, p.fenced = restoreCtx, fenced
	p.mu.Unlock()
	p.assignment.Store(nil)
	sess, err := kgo.NewGroupTransactSession(append(p.kafkaOpts(
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(commandTopics...),
		kgo.TransactionalID(p.cfg.TransactionalID),
		kgo.ClientID(p.cfg.TransactionalID), // names the instance in the group (chronicle status)
		kgo.TransactionTimeout(p.cfg.TransactionTimeout),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
		kgo.RebalanceTimeout(p.cfg.RebalanceTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, p.cfg.SessionTimeout/5)),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.Balancers(trackingBalancer{GroupBalancer: kgo.CooperativeStickyBalancer(), track: func(a map[string][]int32) { p.assignment.Store(&a) }}),
		kgo.RecordPartitioner(topics.Partitioner()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(p.assigned),
		kgo.OnPartitionsRevoked(p.revoked),
		kgo.OnPartitionsLost(p.revoked),
	), p.cfg.SessionOptions...)...)
	if err != nil {
		cancelRestores()
		return fmt.Errorf("creating transact session: %w", err)
	}
	p.sess.Store(sess)
	// Fence the predecessor with our transactional id before any restore
	// reads: InitProducerID aborts its open transaction at once.
	fctx, fcancel := context.WithTimeout(ctx, p.cfg.TransactionTimeout)
	_, _, err = sess.Client().ProducerID(fctx)
	fcancel()
	if err != nil {
		cancelRestores()
		sess.Client().Close()
		return fmt.Errorf("initialising the transactional producer %q (fencing its predecessor): %w", p.cfg.TransactionalID, err)
	}
	close(fenced)
	p.running.Store(true)
	defer p.running.Store(false)
	defer func() {
		// Under p.mu, so that no restore starts after this (startRestore
		// runs under p.mu and checks the context): restoreWG.Add must not
		// race with the Wait below.
		p.mu.Lock()
		cancelRestores()
		p.mu.Unlock()
		p.restoreWG.Wait()
		if !p.crashed() {
			sess.Close() // leaves the group; revokes everything
		} else {
			sess.Client().Close()
		}
		p.mu.Lock()
		clear(p.parts)
		p.mu.Unlock()
	}()
	return p.loop(ctx, sess)
}

// txn is the open transaction's bookkeeping.
type txn struct {
	open    bool
	started time.Time
	count   int
	touched map[*partition]struct{}
	// behind are the partitions whose last fetch ended below their last
	// stable offset: more of their input is on the broker (see drained).
	behind map[topicPartition]struct{}
}

func (p *Processor) loop(ctx context.Context, sess *kgo.GroupTransactSession) error {
	t := txn{touched: map[*partition]struct{}{}, behind: map[topicPartition]struct{}{}}
	for {
		if ctx.Err() != nil {
			return p.shutdown(sess, &t)
		}
		if p.crashed() {
			return errors.New("crashed")
		}
		if !t.open {
			if err := p.rearm(ctx, sess); err != nil {
				return err
			}
			if err := p.checkTopics(ctx); err != nil {
				return err
			}
		}
		pollCtx, cancel := context.WithTimeout(ctx, p.pollWait(&t))
		fetches := sess.PollRecords(pollCtx, p.cfg.CommitEvery-t.count)
		cancel()
		if fetches.IsClientClosed() {
			return errors.New("kafka client closed")
		}
		fetches.EachError(func(topic string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				p.log.Warn("fetch error", "topic", topic, "partition", part, "err", err)
			}
		})
		if p.crashed() {
			return errors.New("crashed")
		}
		if !fetches.Empty() {
			if !t.open {
				if err := sess.Begin(); err != nil {
					return fmt.Errorf("beginning transaction: %w", err)
				}
				t.open, t.started = true, time.Now()
				p.txnErr.Store(nil)
			}
			t.count += p.processBatch(ctx, sess, fetches, t.touched)
			trackBehind(fetches, t.behind)
		}
		if t.open && (t.count >= p.cfg.CommitEvery || time.Since(t.started) >= p.cfg.CommitInterval || drained(sess, &t)) {
			if err := p.endTxn(ctx, sess, &t); err != nil {
				return err
			}
		} else if !t.open {
			p.settleStores()
		}
	}
}

// errFatal marks a session error that starting a new session cannot fix:
// Run returns it.
var errFatal = errors.New("the processor cannot go on")

// topicCheckEvery is how often a running processor checks that its group
// still owns the topics and that their partition counts did not change.
const topicCheckEvery = 30 * time.Second

// checkTopics checks, at most every topicCheckEvery, that this group still
// serves the topics (another was not given them with --take-over) and that
// no partition count changed, which would move aggregates to other
// partitions and fork their history. Either is fatal.
func (p *Processor) checkTopics(ctx context.Context) error {
	if time.Since(p.lastTopicCheck) < p.topicCheckEvery {
		return nil
	}
	p.lastTopicCheck = time.Now()
	for _, b := range p.bindings {
		err := topics.CheckPartitions(ctx, p.baseClient, b.names, b.n)
		if errors.Is(err, topics.ErrPartitionsChanged) {
			p.log.Error("partition count changed; stopping", "prefix", b.names.Prefix, "err", err)
			return fmt.Errorf("%w: %w", errFatal, err)
		}
		if err != nil {
			p.log.Warn("checking the partition counts failed; retrying later", "prefix", b.names.Prefix, "err", err)
			continue
		}
		own, err := topics.GroupOwner(ctx, p.baseClient, b.names)
		if err != nil {
			p.log.Warn("checking which group serves the topics failed; retrying later", "prefix", b.names.Prefix, "err", err)
			continue
		}
		if own.Group != "" && own.Group != p.cfg.Group {
			err := fmt.Errorf("%w: the topics of %q were taken over by group %q at %v; this instance of group %q stops so that no command is processed twice",
				errFatal, b.names.Prefix, own.Group, own.Since, p.cfg.Group)
			p.log.Error("topics taken over by another group; stopping", "err", err)
			return err
		}
	}
	return nil
}

// rearm keeps this instance's idea of its partitions exact while no
// transaction is open. GroupTransactSession passes only the first revoke
// (or lost) to our callbacks until the next End; an idle End re-arms them.
// With no transaction open and nothing polled since the last End (an empty
// poll leaves no offsets to commit), that End sends nothing and rewinds
// nothing. A revoke that still slipped through is caught by comparing the
// partitions held with the member's whole assignment from the last
// SyncGroup (trackingBalancer).
func (p *Processor) rearm(ctx context.Context, sess *kgo.GroupTransactSession) error {
	if p.revokedSeen.Swap(false) {
		if _, err := sess.End(ctx, kgo.TryAbort); err != nil {
			return fmt.Errorf("re-arming the revoke callbacks with an idle End: %w", err)
		}
	}
	a := p.assignment.Load()
	if a == nil {
		return nil
	}
	owned := map[topicPartition]bool{}
	for topic, parts := range *a {
		for _, id := range parts {
			owned[topicPartition{topic, id}] = true
		}
	}
	p.batchMu.Lock()
	defer p.batchMu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	var gone []topicPartition
	for tp := range p.parts {
		if !owned[tp] {
			gone = append(gone, tp)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	for _, tp := range gone {
		p.forgetLocked(tp)
	}
	p.log.Warn("partitions no longer assigned here were still held (a revoke the session did not report); dropped them",
		"dropped", fmt.Sprint(gone), "held", p.heldLocked())
	return nil
}

// forgetLocked checkpoints (unless crashed) and drops a partition this
// instance no longer owns. p.batchMu and p.mu must be held.
func (p *Processor) forgetLocked(tp topicPartition) {
	part := p.parts[tp]
	if part == nil {
		return
	}
	if part.isRestored() && !p.crashed() {
		part.st.checkpoint() // skipped if the open transaction touched it
	}
	part.close()
	delete(p.parts, tp)
}

// heldLocked describes the partitions held, for logs. p.mu must be held.
func (p *Processor) heldLocked() string {
	held := map[string][]int32{}
	for tp := range p.parts {
		held[tp.topic] = append(held[tp.topic], tp.partition)
	}
	for _, ids := range held {
		slices.Sort(ids)
	}
	return fmt.Sprint(held)
}

// trackingBalancer is the cooperative-sticky balancer that also reports
// this member's whole assignment on every SyncGroup, so the processor can
// check the partitions it holds against it (see rearm).
type trackingBalancer struct {
	kgo.GroupBalancer
	track func(map[string][]int32)
}

// ParseSyncAssignment parses and reports this member's assignment.
func (b trackingBalancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	a, err := b.GroupBalancer.ParseSyncAssignment(assignment)
	if err == nil {
		b.track(a)
	}
	return a, err
}

// drained reports whether the input is worked off: every fetched command
// was handled, and the last fetch of every partition reached its last
// stable offset. The open transaction then ends at once, so a lone command
// waits for one transaction round trip, not for CommitInterval; under load,
// commands keep arriving while a transaction ends, so transactions grow
// with the load, and with a backlog they take CommitEvery commands or
// CommitInterval, whichever comes first.
func drained(sess *kgo.GroupTransactSession, t *txn) bool {
	return len(t.behind) == 0 && sess.Client().BufferedFetchRecords() == 0
}

// trackBehind records which partitions of fetches ended below their last
// stable offset, and forgets those that caught up.
func trackBehind(fetches kgo.Fetches, behind map[topicPartition]struct{}) {
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 {
			return
		}
		tp := topicPartition{fp.Topic, fp.Partition}
		if fp.Records[len(fp.Records)-1].Offset+1 < fp.LastStableOffset {
			behind[tp] = struct{}{}
		} else {
			delete(behind, tp)
		}
	})
}

func (p *Processor) pollWait(t *txn) time.Duration {
	if !t.open {
		return time.Second
	}
	left := p.cfg.CommitInterval - time.Since(t.started)
	return max(left, time.Millisecond)
}

// endTxn commits the open transaction (or aborts it after a produce error)
// and settles in-memory state accordingly.
func (p *Processor) endTxn(ctx context.Context, sess *kgo.GroupTransactSession, t *txn) error {
	if p.crashed() {
		return errors.New("crashed")
	}
	try := kgo.TryCommit
	if perr := p.txnErr.Load(); perr != nil {
		p.log.Warn("aborting transaction after a produce error", "err", *perr)
		try = kgo.TryAbort
	}
	if try == kgo.TryCommit {
		// The state records go last, one per changed aggregate.
		p.batchMu.Lock()
		for part := range t.touched {
			if !part.isClosed() {
				part.produceStates(p, sess)
			}
		}
		p.batchMu.Unlock()
		// Every record's fate is known before the commit is decided: a
		// record the client gives up on without failing the producer (a
		// state larger than a batch, a record the broker refuses) only
		// fails its own batch, and End would commit the rest without it.
		// Flush calls every promise before it returns.
		fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.TransactionTimeout)
		ferr := sess.Client().Flush(fctx)
		fcancel()
		if perr := p.txnErr.Load(); perr != nil || ferr != nil {
			p.log.Warn("aborting transaction after a produce error", "err", cmp.Or(ptrErr(perr), ferr))
			try = kgo.TryAbort
		}
	}
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.TransactionTimeout)
	committed, err := sess.End(endCtx, try)
	cancel()
	p.cfg.Observer.TransactionEnded(committed && err == nil, t.count, time.Since(t.started))
	touched := t.touched
	t.open, t.count, t.touched = false, 0, map[*partition]struct{}{}
	clear(t.behind)
	// Partition bookkeeping below must not race a revoke callback.
	p.batchMu.Lock()
	defer p.batchMu.Unlock()
	if committed && err == nil {
		p.stats.txnsCommitted.Add(1)
		for part := range touched {
			err := part.st.committed()
			// End flushed every record and committed read their
			// offsets: nothing refers to the arena's blocks any more.
			part.releaseArenas()
			if err != nil {
				p.stats.foreignWrites.Add(1)
				p.cfg.Observer.ForeignWrite(part.b.kind.Name())
				p.log.Error("foreign events in the events partition; restoring it from Kafka", "topic", part.b.names.Events, "partition", part.id, "err", err)
				p.reset(part, true)
				continue
			}
			if !part.isClosed() {
				part.st.evict()
				if part.st.checkpointDue(p.cfg.CheckpointEvents, p.cfg.CheckpointInterval) {
					part.st.checkpointStep()
				}
			}
		}
		p.settleStoresLocked()
		return nil
	}
	p.stats.txnsAborted.Add(1)
	p.log.Warn("transaction aborted; restoring the partitions it touched", "partitions", len(touched), "err", err)
	for part := range touched {
		part.dropArenas() // the client may still hold its records
		p.reset(part, false)
	}
	if err != nil {
		return fmt.Errorf("ending transaction: %w", err)
	}
	return nil
}

// settleStores restores, with a full replay, the partitions whose
// checkpoint the snapshot store lost, and checkpoints partitions whose
// interval passed without new commands. Called with no transaction open.
func (p *Processor) settleStores() {
	if p.cfg.Snapshots == nil {
		return
	}
	p.batchMu.Lock()
	defer p.batchMu.Unlock()
	p.settleStoresLocked()
}

// settleStoresLocked is settleStores with batchMu held.
func (p *Processor) settleStoresLocked() {
	if p.cfg.Snapshots == nil {
		return
	}
	p.mu.Lock()
	parts := make([]*partition, 0, len(p.parts))
	for _, part := range p.parts {
		parts = append(parts, part)
	}
	p.mu.Unlock()
	for _, part := range parts {
		if !part.isRestored() {
			continue
		}
		if err := part.st.lostErr(); err != nil {
			if errors.Is(err, errUntrusted) { // see distrust
				part.fallBack(p)
			}
			p.reset(part, part.forceFull)
			continue
		}
		part.st.evict()
		if part.st.checkpointDue(p.cfg.CheckpointEvents, p.cfg.CheckpointInterval) {
			part.st.checkpointStep()
		}
	}
}

// shutdown ends the open transaction with a commit, bounded by
// ShutdownTimeout, and checkpoints every partition.
func (p *Processor) shutdown(sess *kgo.GroupTransactSession, t *txn) error {
	var err error
	if t.open {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
		err = p.endTxn(ctx, sess, t)
		cancel()
	}
	if p.cfg.Snapshots != nil && err == nil {
		// The checkpoints load what restores deferred: all of them within
		// one ShutdownTimeout, however many partitions wait on the store.
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
		defer cancel()
		p.batchMu.Lock()
		defer p.batchMu.Unlock()
		p.mu.Lock()
		for _, part := range p.parts {
			if part.isRestored() {
				part.st.checkpointWithin(ctx)
			}
		}
		p.mu.Unlock()
	}
	return err
}

// processBatch hands each partition's records to a worker, at most
// Concurrency at a time, and waits for all of them. It returns how many
// records were handled.
func (p *Processor) processBatch(ctx context.Context, sess *kgo.GroupTransactSession, fetches kgo.Fetches, touched map[*partition]struct{}) int {
	p.batchMu.Lock()
	defer p.batchMu.Unlock()
	p.stats.batches.Add(1)
	sem := make(chan struct{}, p.cfg.Concurrency)
	var wg sync.WaitGroup
	n := 0
	// A batch of few partitions leaves cores idle: each partition's
	// commands are then decided by several workers (see fanOut), so that
	// up to min(Concurrency, GOMAXPROCS) goroutines decide at once.
	parts := 0
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) > 0 {
			parts++
		}
	})
	workers := max(1, min(p.cfg.Concurrency, runtime.GOMAXPROCS(0))/max(parts, 1))
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 {
			return
		}
		n += len(fp.Records)
		p.mu.Lock()
		part := p.parts[topicPartition{fp.Topic, fp.Partition}]
		p.mu.Unlock()
		if part == nil || !part.isRestored() {
			// Revoked (or not yet restored) since the poll: the
			// transaction will abort, and the records are fetched again
			// by their owner.
			p.log.Debug("dropping records of a partition not ready here", "topic", fp.Topic, "partition", fp.Partition)
			p.txnErr.CompareAndSwap(nil, ptr(fmt.Errorf("records of partition %s/%d arrived while it was not ready", fp.Topic, fp.Partition)))
			return
		}
		touched[part] = struct{}{}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			part.process(ctx, p, sess, fp.Records, workers)
		}()
	})
	wg.Wait()
	return n
}

func ptr[T any](v T) *T { return &v }

// ptrErr is *p, or nil for a nil p.
func ptrErr(p *error) error {
	if p == nil {
		return nil
	}
	return *p
}

// produce sends one record in the open transaction; a failure aborts the
// transaction when it ends.
func (p *Processor) produce(sess *kgo.GroupTransactSession, r *kgo.Record) {
	sess.Produce(context.Background(), r, p.promiseFn)
}

func (p *Processor) promise(r *kgo.Record, err error) {
	if err != nil {
		p.txnErr.CompareAndSwap(nil, ptr(fmt.Errorf("producing to %s: %w", r.Topic, err)))
	}
}

// assigned pauses the new partitions and restores them in the background;
// fetching resumes once a partition's state is ready.
func (p *Processor) assigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	cl.PauseFetchPartitions(assigned)
	p.mu.Lock()
	defer p.mu.Unlock()
	for topic, parts := range assigned {
		b := p.bindings[topic]
		if b == nil {
			continue
		}
		for _, id := range parts {
			part := p.newPartition(b, id)
			p.parts[topicPartition{topic, id}] = part
			p.startRestore(cl, part)
		}
	}
	p.log.Info("partitions assigned", "assigned", assigned, "held", p.heldLocked())
}

// revoked waits for the batch in flight, then forgets the partitions. The
// open transaction aborts (the session saw the revoke), so nothing they did
// in it survives.
func (p *Processor) revoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	p.revokedSeen.Store(true)
	p.batchMu.Lock()
	defer p.batchMu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	for topic, parts := range revoked {
		for _, id := range parts {
			p.forgetLocked(topicPartition{topic, id})
		}
	}
	p.log.Info("partitions revoked", "revoked", revoked, "held", p.heldLocked())
}

// reset discards a partition's state after an aborted transaction (or a
// lost snapshot store) and restores it again, fetching paused meanwhile;
// full forces a replay of the whole events partition.
func (p *Processor) reset(part *partition, full bool) {
	sess := p.sess.Load()
	if sess == nil {
		return
	}
	cl := sess.Client()
	p.mu.Lock()
	defer p.mu.Unlock()
	tp := topicPartition{part.b.names.Commands, part.id}
	if p.parts[tp] != part {
		return // revoked meanwhile
	}
	part.close()
	fresh := p.newPartition(part.b, part.id)
	fresh.forceFull = full || part.forceFull
	p.parts[tp] = fresh
	cl.PauseFetchPartitions(map[string][]int32{tp.topic: {tp.partition}})
	p.startRestore(cl, fresh)
}

// startRestore runs restore for part in a goroutine owned by the session.
// p.mu must be held.
func (p *Processor) startRestore(cl *kgo.Client, part *partition) {
	ctx, fenced := p.restoreCtx, p.fenced
	if ctx.Err() != nil {
		return // the session is ending (see runSession); its partitions are forgotten
	}
	p.restoreWG.Add(1)
	go func() {
		defer p.restoreWG.Done()
		part.setPhase("waiting for this instance's transactional producer to fence its predecessor")
		select {
		case <-fenced:
		case <-ctx.Done():
			return
		case <-part.done:
			return
		}
		// A restore claims the partition in the snapshot store; one this
		// member is no longer assigned would take the lease from its owner.
		if a := p.assignment.Load(); a != nil && !slices.Contains((*a)[part.b.names.Commands], part.id) {
			p.log.Info("not restoring a partition no longer assigned here", "topic", part.b.names.Commands, "partition", part.id)
			return
		}
		backoff := 100 * time.Millisecond
		for {
			err := p.restore(ctx, part)
			if err == nil {
				break
			}
			if ctx.Err() != nil || part.isClosed() {
				return
			}
			var stop *StoppedError
			if errors.As(err, &stop) {
				part.stopped.Store(stop)
				p.stats.stopped.Add(1)
				p.log.Error("partition stopped: the running code cannot restore it; its commands wait until an instance that can takes it over",
					"topic", stop.Topic, "partition", stop.Partition, "offset", stop.Offset, "event_type", stop.Type, "schema_version", stop.SchemaVersion, "err", stop.Err)
				return
			}
			part.setPhase("restoring failed, retrying in %s: %v", backoff, err)
			p.log.Error("restoring partition failed; retrying", "topic", part.b.names.Events, "partition", part.id, "err", err, durationAttr("retry_in", backoff))
			select {
			case <-ctx.Done():
				return
			case <-part.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		tp := topicPartition{part.b.names.Commands, part.id}
		if p.parts[tp] == part {
			cl.ResumeFetchPartitions(map[string][]int32{tp.topic: {tp.partition}})
		}
	}()
}

// Ready is closed once Run has created or checked the topics and claimed
// them for the group, just before it joins the group and starts consuming:
// commands sent from then on land in topics that exist and will be
// processed. It does not mean that this instance holds partitions or has
// restored them: a command may still wait for the group to assign its
// partition and for the restore. Readiness (and /readyz) reports that.
func (p *Processor) Ready() <-chan struct{} { return p.ready }

// Stats are counters of what a Processor did since it was created.
type Stats struct {
	Commands       int64 // commands handled (each got one result, or was forwarded)
	Accepted       int64
	Rejected       int64
	Duplicates     int64
	Invalid        int64 // invalid results plus undecodable records sent to the DLQ
	Forwarded      int64 // commands forwarded to their owner partition
	Events         int64 // events appended
	TxnsCommitted  int64
	TxnsAborted    int64
	Restores       int64 // partition restores completed
	EventsReplayed int64 // events applied during restores, or deferred by restores from a checkpoint

	FullReplays        int64 // restores that replayed the whole events partition
	CheckpointRestores int64 // restores that started from a checkpoint
	Fallbacks          int64 // restores whose snapshots turned out stale, corrupt or of another schema, during the restore or at an aggregate's later use, so that the partition is restored again with a full replay
	Deferred           int64 // aggregates whose events after the checkpoint a restore deferred to their first use
	DeferredLoaded     int64 // deferred aggregates loaded since, their deferred events applied
	SnapshotLoads      int64 // aggregates looked up in the snapshot store
	SnapshotsSaved     int64
	Checkpoints        int64 // checkpoints written
	Evictions          int64 // aggregates evicted from the cache
	Stopped            int64 // partitions stopped because the running code cannot restore them
	ForeignWrites      int64 // commits whose events did not land where ours must: someone else writes the events partition
	FannedOut          int64 // batches of one partition's commands decided by several workers (see Config.Concurrency)
}

type counters struct {
	commands, accepted, rejected, duplicates, invalid, forwarded, events atomic.Int64
	txnsCommitted, txnsAborted, restores, eventsReplayed                 atomic.Int64
	fullReplays, checkpointRestores, fallbacks, snapshotLoads            atomic.Int64
	snapshotsSaved, checkpoints, evictions, stopped                      atomic.Int64
	foreignWrites, deferred, deferredLoaded                              atomic.Int64
	fannedOut                                                            atomic.Int64 // batches decided by several workers (see fanOut)
	batches                                                              atomic.Int64 // polls whose records were handled, for tests
}

// Stats returns a copy of the counters.
func (p *Processor) Stats() Stats {
	s := &p.stats
	return Stats{
		Commands: s.commands.Load(), Accepted: s.accepted.Load(), Rejected: s.rejected.Load(),
		Duplicates: s.duplicates.Load(), Invalid: s.invalid.Load(), Forwarded: s.forwarded.Load(),
		Events: s.events.Load(), TxnsCommitted: s.txnsCommitted.Load(), TxnsAborted: s.txnsAborted.Load(),
		Restores: s.restores.Load(), EventsReplayed: s.eventsReplayed.Load(),
		FullReplays: s.fullReplays.Load(), CheckpointRestores: s.checkpointRestores.Load(), Fallbacks: s.fallbacks.Load(),
		Deferred: s.deferred.Load(), DeferredLoaded: s.deferredLoaded.Load(),
		SnapshotLoads: s.snapshotLoads.Load(), SnapshotsSaved: s.snapshotsSaved.Load(), Checkpoints: s.checkpoints.Load(),
		Evictions: s.evictions.Load(), Stopped: s.stopped.Load(), ForeignWrites: s.foreignWrites.Load(),
		FannedOut: s.fannedOut.Load(),
	}
}

// Assigned returns the partitions this instance owns and has restored, by
// commands topic.
func (p *Processor) Assigned() map[string][]int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]int32{}
	for tp, part := range p.parts {
		if part.isRestored() {
			out[tp.topic] = append(out[tp.topic], tp.partition)
		}
	}
	return out
}

// kgoLogger forwards franz-go's warnings and errors to slog.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if level > kgo.LogLevelWarn {
		return
	}
	keyvals = withDurationUnits(keyvals)
	switch level {
	case kgo.LogLevelError:
		k.l.Error("kafka: "+msg, keyvals...)
	case kgo.LogLevelWarn:
		k.l.Warn("kafka: "+msg, keyvals...)
	}
}

// withDurationUnits returns keyvals with every time.Duration value as its
// string ("250ms"), so that its unit shows in every slog handler; keyvals
// is copied, not changed, when there is one.
func withDurationUnits(keyvals []any) []any {
	var out []any
	for i := 1; i < len(keyvals); i += 2 {
		d, ok := keyvals[i].(time.Duration)
		if !ok {
			continue
		}
		if out == nil {
			out = slices.Clone(keyvals)
		}
		out[i] = d.String()
	}
	if out == nil {
		return keyvals
	}
	return out
}
