package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/topics"
)

// ProducerConfig configures a Producer.
type ProducerConfig struct {
	// Kafka says how to reach the brokers.
	Kafka Kafka
	// Logger receives the producer's logs (failed result fetches); nil
	// discards them.
	Logger *slog.Logger
}

// Validate reports every problem of the configuration at once.
func (c *ProducerConfig) Validate() error {
	if err := c.Kafka.Validate(); err != nil {
		return fmt.Errorf("producer config: %w", err)
	}
	return nil
}

// Producer publishes commands to "<prefix>.commands" and, for Send and
// SendAll, waits for their results on "<prefix>.results". It is safe for
// concurrent use by any number of goroutines; create one per process and
// Close it when done.
//
// Commands are keyed by aggregate id and placed by the murmur2 hash of the key
// (Kafka's default, which the processor uses to find an aggregate's owner
// partition), written with acks=all by an idempotent producer.
//
// Results are read by one goroutine that the first Send starts and Close
// stops. It consumes every partition of each results topic in use, with
// read_committed, from the end offsets listed before the first command of
// that topic was published, so no result can slip past it however fast the
// processor answers. The partitions of a results topic are listed once: if
// the topic gains partitions, create a new Producer.
type Producer struct {
	log  *slog.Logger
	prod *kgo.Client // writes commands
	res  *kgo.Client // reads results: a direct consumer, partitions added per topic
	adm  *kadm.Client

	ctx    context.Context // ends the results loop; cancelled by Close
	cancel context.CancelFunc
	closed chan struct{} // closed by Close; wakes waiters
	wg     sync.WaitGroup

	mu       sync.Mutex
	isClosed bool
	polling  bool
	watches  map[string]*watch    // by results topic
	waiters  map[string][]*waiter // by command id
	fetchErr atomic.Pointer[error]
}

// watch is a results topic being consumed. ready is closed once err is set
// or the topic's partitions were added to the results consumer.
type watch struct {
	ready chan struct{}
	err   error
}

// waiter wants the result of one command. Several waiters may share ch
// (SendAll); ch's capacity is at least the number of waiters sharing it, and
// each waiter gets at most one delivery, so delivering never blocks.
type waiter struct {
	ch    chan delivery
	index int
}

type delivery struct {
	index  int
	result aggregates.Result
	err    error
}

// NewProducer validates cfg and returns a Producer. It does not contact the
// brokers: connection problems surface from the first Publish or Send.
func NewProducer(cfg ProducerConfig) (*Producer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prod, err := cfg.Kafka.newClient(
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
	if err != nil {
		return nil, err
	}
	res, err := cfg.Kafka.newClient(kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		prod.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Producer{
		log: orDiscard(cfg.Logger), prod: prod, res: res, adm: kadm.NewClient(res),
		ctx: ctx, cancel: cancel, closed: make(chan struct{}),
		watches: map[string]*watch{}, waiters: map[string][]*waiter{},
	}, nil
}

// Close stops the results goroutine and closes the Kafka connections. Calls
// waiting for results return ErrClosed; later calls fail with ErrClosed.
// Close is idempotent and safe to call concurrently with other methods.
func (p *Producer) Close() {
	p.mu.Lock()
	if p.isClosed {
		p.mu.Unlock()
		return
	}
	p.isClosed = true
	close(p.closed)
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	p.res.Close()
	p.prod.Close()
}

// Publish writes cmd to "<prefix>.commands" and returns once the brokers
// acknowledged it (acks=all), without waiting for its result.
func (p *Producer) Publish(ctx context.Context, prefix string, cmd aggregates.Command) error {
	return p.PublishAll(ctx, prefix, []aggregates.Command{cmd})
}

// PublishAll writes cmds to "<prefix>.commands" in one batch and returns once
// the brokers acknowledged every one. Commands of one aggregate keep their
// order. On error some commands may have been written: resending all of them
// with the same ids is safe.
func (p *Producer) PublishAll(ctx context.Context, prefix string, cmds []aggregates.Command) error {
	recs, err := commandRecords(prefix, cmds)
	if err != nil {
		return err
	}
	return p.produce(ctx, prefix, recs)
}

// Send publishes cmd and waits until its result arrives on
// "<prefix>.results" or ctx ends. A result of any status (accepted, rejected,
// duplicate, invalid) is returned with a nil error: inspect Result.Status.
// When ctx ends first the error matches ErrNoResult and ctx's error.
func (p *Producer) Send(ctx context.Context, prefix string, cmd aggregates.Command) (aggregates.Result, error) {
	results, missing, err := p.send(ctx, prefix, []aggregates.Command{cmd})
	if err != nil {
		return aggregates.Result{}, err
	}
	if len(missing) > 0 {
		return aggregates.Result{}, fmt.Errorf("waiting for the result of command %s (%s for %q) on %s: %w (%w)%s; "+
			"it was published and may still be processed: is a processor running for prefix %q? Resending the same command is safe",
			cmd.ID, cmd.Type, cmd.AggregateID, topics.For(prefix).Results, ErrNoResult, context.Cause(ctx), p.fetchHint(), prefix)
	}
	return results[0], nil
}

// SendAll publishes cmds in one batch and waits for all of their results, or
// until ctx ends. results[i] is the result of cmds[i]. When ctx ends first,
// the results that did arrive are returned, the others are zero (empty
// CommandID), and the error matches ErrNoResult and ctx's error.
func (p *Producer) SendAll(ctx context.Context, prefix string, cmds []aggregates.Command) ([]aggregates.Result, error) {
	results, missing, err := p.send(ctx, prefix, cmds)
	if err != nil {
		return results, err
	}
	if len(missing) > 0 {
		first := cmds[missing[0]]
		return results, fmt.Errorf("waiting for results on %s: %d of %d commands have none (the first is %s, %s for %q): %w (%w)%s; "+
			"they were published and may still be processed: is a processor running for prefix %q? Resending them with the same ids is safe",
			topics.For(prefix).Results, len(missing), len(cmds), first.ID, first.Type, first.AggregateID, ErrNoResult, context.Cause(ctx), p.fetchHint(), prefix)
	}
	return results, nil
}

// send publishes cmds and collects their results. missing lists the indexes
// of cmds without a result when ctx ended.
func (p *Producer) send(ctx context.Context, prefix string, cmds []aggregates.Command) (results []aggregates.Result, missing []int, err error) {
	recs, err := commandRecords(prefix, cmds)
	if err != nil {
		return nil, nil, err
	}
	if len(cmds) == 0 {
		return nil, nil, nil
	}
	// Start reading results before publishing: the end offsets are taken
	// now, so every result to come lies after them.
	if err := p.watch(ctx, topics.For(prefix).Results); err != nil {
		return nil, nil, err
	}
	ch := make(chan delivery, len(cmds))
	ws := make([]*waiter, len(cmds))
	ids := make([]string, len(cmds))
	p.mu.Lock()
	if p.isClosed {
		p.mu.Unlock()
		return nil, nil, ErrClosed
	}
	for i := range cmds {
		ids[i] = cmds[i].ID.String()
		ws[i] = &waiter{ch: ch, index: i}
		p.waiters[ids[i]] = append(p.waiters[ids[i]], ws[i])
	}
	p.mu.Unlock()

	if err := p.produce(ctx, prefix, recs); err != nil {
		p.unregister(ids, ws, nil)
		return nil, nil, err
	}

	results = make([]aggregates.Result, len(cmds))
	got := make([]bool, len(cmds))
	var errs []error
	take := func(d delivery) {
		got[d.index] = true
		if d.err != nil {
			errs = append(errs, d.err)
			return
		}
		results[d.index] = d.result
	}
	for n := 0; n < len(cmds); n++ {
		select {
		case d := <-ch:
			take(d)
		case <-ctx.Done():
			// Stop waiting, then keep what was delivered meanwhile:
			// deliveries happen under p.mu, so after unregistering
			// nothing more arrives.
			p.unregister(ids, ws, got)
			for drained := false; !drained; {
				select {
				case d := <-ch:
					take(d)
				default:
					drained = true
				}
			}
			for i := range got {
				if !got[i] {
					missing = append(missing, i)
				}
			}
			return results, missing, errors.Join(errs...)
		case <-p.closed:
			return results, nil, fmt.Errorf("waiting for results on %s: %w", topics.For(prefix).Results, ErrClosed)
		}
	}
	return results, nil, errors.Join(errs...)
}

// unregister removes the waiters of ids that have not got their result
// (all of them when got is nil).
func (p *Producer) unregister(ids []string, ws []*waiter, got []bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, id := range ids {
		if got != nil && got[i] {
			continue
		}
		list := p.waiters[id]
		for j, w := range list {
			if w == ws[i] {
				list = append(list[:j], list[j+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(p.waiters, id)
		} else {
			p.waiters[id] = list
		}
	}
}

// produce writes recs and waits for the brokers' acknowledgements.
func (p *Producer) produce(ctx context.Context, prefix string, recs []*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	select {
	case <-p.closed:
		return ErrClosed
	default:
	}
	res := p.prod.ProduceSync(ctx, recs...)
	var failed int
	var first error
	for _, r := range res {
		if r.Err != nil {
			failed++
			if first == nil {
				first = r.Err
			}
		}
	}
	if failed == 0 {
		return nil
	}
	select {
	case <-p.closed:
		return ErrClosed
	default:
	}
	topic := topics.For(prefix).Commands
	if len(recs) == 1 {
		return fmt.Errorf("publishing command to %s: %w; it may or may not have been written: resend it with the same id (duplicates are detected)", topic, first)
	}
	return fmt.Errorf("publishing commands to %s: %d of %d failed, the first with: %w; resend all of them with the same ids (duplicates are detected)", topic, failed, len(recs), first)
}

// commandRecords checks and encodes cmds as records of "<prefix>.commands".
func commandRecords(prefix string, cmds []aggregates.Command) ([]*kgo.Record, error) {
	if prefix == "" {
		return nil, errors.New("empty topic prefix: pass the prefix the processor serves, e.g. \"orders\"")
	}
	topic := topics.For(prefix).Commands
	recs := make([]*kgo.Record, len(cmds))
	for i := range cmds {
		c := &cmds[i]
		switch {
		case c.AggregateID == "":
			return nil, fmt.Errorf("command %d (%s, id %s) has no aggregate id: set AggregateID, the record key that picks the aggregate's partition", i, c.Type, c.ID)
		case len(c.AggregateID) > aggregates.MaxIDLength:
			return nil, fmt.Errorf("command %d (%s, id %s): aggregate id is %d bytes, longer than the %d accepted", i, c.Type, c.ID, len(c.AggregateID), aggregates.MaxIDLength)
		case c.Type == "":
			return nil, fmt.Errorf("command %d (id %s) has no type: set Type, or build the command with Kind.NewCommand", i, c.ID)
		}
		v, err := c.Encode()
		if err != nil {
			return nil, fmt.Errorf("command %d: %w: give it an id (aggregates.NewID) or build it with Kind.NewCommand", i, err)
		}
		recs[i] = &kgo.Record{Topic: topic, Key: []byte(c.AggregateID), Value: v}
	}
	return recs, nil
}

// watch makes sure the results topic is being consumed from offsets listed
// no later than now.
func (p *Producer) watch(ctx context.Context, topic string) error {
	for {
		p.mu.Lock()
		if p.isClosed {
			p.mu.Unlock()
			return ErrClosed
		}
		w, ok := p.watches[topic]
		if !ok {
			w = &watch{ready: make(chan struct{})}
			p.watches[topic] = w
			p.mu.Unlock()
			w.err = p.startWatch(ctx, topic)
			if w.err != nil {
				p.mu.Lock()
				delete(p.watches, topic)
				p.mu.Unlock()
			}
			close(w.ready)
			return w.err
		}
		p.mu.Unlock()
		select {
		case <-w.ready:
		case <-ctx.Done():
			return fmt.Errorf("waiting to read results from %s: %w", topic, ctx.Err())
		}
		// A failure caused by the other caller's context is not ours:
		// try again with our own.
		if w.err != nil && ctx.Err() == nil && (errors.Is(w.err, context.Canceled) || errors.Is(w.err, context.DeadlineExceeded)) {
			continue
		}
		return w.err
	}
}

// startWatch lists the end offsets of topic's partitions and adds them to
// the results consumer, starting its loop on first use.
func (p *Producer) startWatch(ctx context.Context, topic string) error {
	ends, err := partitionOffsets(ctx, p.adm.ListEndOffsets, topic)
	if err != nil {
		return fmt.Errorf("preparing to read results: %w", err)
	}
	parts := make(map[int32]kgo.Offset, len(ends))
	for part, end := range ends {
		parts[part] = kgo.NewOffset().At(end)
	}
	p.res.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts})
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isClosed {
		return ErrClosed
	}
	if !p.polling {
		p.polling = true
		p.wg.Add(1)
		go p.readResults()
	}
	return nil
}

// readResults is the results loop: it hands every result to the waiters of
// its command id until Close.
func (p *Producer) readResults() {
	defer p.wg.Done()
	for {
		fs := p.res.PollFetches(p.ctx)
		if p.ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		failed := false
		fs.EachError(func(topic string, part int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			failed = true
			p.fetchErr.Store(&err)
			p.log.Warn("reading results failed; retrying", "topic", topic, "partition", part, "err", err)
		})
		if !failed {
			p.fetchErr.Store(nil)
		}
		fs.EachRecord(p.dispatch)
	}
}

// dispatch delivers one result record to the waiters of its key.
func (p *Producer) dispatch(r *kgo.Record) {
	p.mu.Lock()
	_, wanted := p.waiters[string(r.Key)]
	p.mu.Unlock()
	if !wanted {
		return
	}
	d := delivery{}
	if err := json.Unmarshal(r.Value, &d.result); err != nil {
		d.err = fmt.Errorf("decoding the result of command %s at %s/%d offset %d: %w; the processor wrote something that is not a Result", r.Key, r.Topic, r.Partition, r.Offset, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := p.waiters[string(r.Key)]
	delete(p.waiters, string(r.Key))
	for _, w := range ws {
		d.index = w.index
		w.ch <- d // never blocks: see waiter
	}
}

// fetchHint describes the last failure of the results consumer, if any, for
// the ErrNoResult message.
func (p *Producer) fetchHint() string {
	if err := p.fetchErr.Load(); err != nil {
		return fmt.Sprintf(" (reading results last failed with: %v)", *err)
	}
	return ""
}
