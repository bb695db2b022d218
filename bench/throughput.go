package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/processor"
	"github.com/chronicle-es/chronicle/topics"
)

// products is how many products the AddLines of one order cycle through:
// each merges into its product's line, so every command is accepted and an
// order stays small.
const products = 5

// orderID names order i.
func orderID(i int) string { return "o-" + strconv.Itoa(i) }

// command returns the k-th command of the workload over orders orders: the
// first orders are CreateOrders, the rest AddLines round robin.
func command(def *aggregates.Definition[order.State], k, orders int) (*kgo.Record, string, error) {
	id := orderID(k % orders)
	var payload any = order.CreateOrder{UserID: "u-" + id}
	if k >= orders {
		p := int64(1 + (k/orders)%products)
		payload = order.AddLine{ProductID: p, Quantity: 1, UnitPrice: 100 * p}
	}
	cmd, err := def.NewCommand(id, payload, aggregates.Metadata{})
	if err != nil {
		return nil, "", err
	}
	v, err := cmd.Encode()
	if err != nil {
		return nil, "", err
	}
	return &kgo.Record{Key: []byte(id), Value: v, Partition: -1}, cmd.ID.String(), nil
}

// produceAll writes recs with one producer and waits until all are
// acknowledged, reporting progress under phase.
func (r *run) produceAll(ctx context.Context, phase string, recs func(yield func(*kgo.Record) bool) error, total int64, extra ...kgo.Opt) error {
	cl, err := kgo.NewClient(append(append(r.opts[:len(r.opts):len(r.opts)], kgo.RecordPartitioner(topics.Partitioner()), kgo.MaxBufferedRecords(100_000),
		kgo.ProducerBatchMaxBytes(1<<20)), extra...)...)
	if err != nil {
		return fmt.Errorf("creating producer: %w", err)
	}
	defer cl.Close()
	var (
		done     atomic.Int64
		firstErr atomic.Pointer[error]
	)
	stop := ticker(func() { r.cfg.Progress(Progress{Phase: phase, Done: done.Load(), Total: total}) })
	defer stop()
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			firstErr.CompareAndSwap(nil, &err)
		}
		done.Add(1)
	}
	err = recs(func(rec *kgo.Record) bool {
		cl.Produce(ctx, rec, promise)
		return firstErr.Load() == nil && ctx.Err() == nil
	})
	if ferr := cl.Flush(ctx); err == nil {
		err = ferr
	}
	if p := firstErr.Load(); p != nil && err == nil {
		err = *p
	}
	if err != nil {
		return fmt.Errorf("%s: %w", phase, err)
	}
	return nil
}

// observer counts what a processor commits, and reports restores.
type observer struct {
	first     atomic.Int64 // Unix nanoseconds of the first handled command
	last      atomic.Int64 // Unix nanoseconds of the last commit
	committed atomic.Int64 // commands of committed transactions
	txns      atomic.Int64
	restored  chan restored
}

type restored struct {
	mode   string
	took   time.Duration
	events int64
}

func newObserver() *observer { return &observer{restored: make(chan restored, 1024)} }

func (o *observer) CommandHandled(string, string, string, time.Duration, time.Duration) {
	if o.first.Load() == 0 {
		o.first.CompareAndSwap(0, time.Now().UnixNano())
	}
}

func (o *observer) TransactionEnded(committed bool, commands int, _ time.Duration) {
	if committed {
		o.committed.Add(int64(commands))
		o.txns.Add(1)
		o.last.Store(time.Now().UnixNano())
	}
}

func (o *observer) Restored(_, mode string, took time.Duration, events int64) {
	select {
	case o.restored <- restored{mode: mode, took: took, events: events}:
	default:
	}
}

func (o *observer) DeadLettered(string, string) {}
func (o *observer) CacheLookup(string, bool)    {}
func (o *observer) Evicted(string, int)         {}
func (o *observer) SnapshotStoreError(string)   {}
func (o *observer) SnapshotStoreRetry(string)   {}
func (o *observer) LeaseLost(string, string)    {}
func (o *observer) ForeignWrite(string)         {}

// elapsed is the time from the first handled command to the last commit.
func (o *observer) elapsed() time.Duration { return time.Duration(o.last.Load() - o.first.Load()) }

// running is a processor started by the bench, stopped with stop.
type running struct {
	p      *processor.Processor
	obs    *observer
	cancel context.CancelFunc
	done   chan error
}

// startProcessor runs a processor of the order aggregate on prefix.
func (r *run) startProcessor(ctx context.Context, prefix string, partitions int32, mod func(*processor.Config)) (*running, error) {
	obs := newObserver()
	cfg := processor.Config{
		Brokers: r.seeds, KafkaOptions: r.cfg.KafkaOptions, Group: prefix + "-group", TransactionalID: prefix + "-txn",
		Aggregates: []processor.Binding{{Kind: order.Definition(), Prefix: prefix}}, Partitions: partitions,
		CommitEvery: r.cfg.CommitEvery, CommitInterval: r.cfg.CommitInterval,
		SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second,
		Logger: r.cfg.Logger, Observer: obs,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := processor.New(cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(ctx)
	rn := &running{p: p, obs: obs, cancel: cancel, done: make(chan error, 1)}
	go func() { rn.done <- p.Run(pctx) }()
	return rn, nil
}

// stop ends the processor and waits for it.
func (rn *running) stop() error {
	rn.cancel()
	return <-rn.done
}

// wait polls until cond holds, the processor fails or ctx ends.
func (rn *running) wait(ctx context.Context, what string, cond func() bool) error {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case err := <-rn.done:
			rn.done <- err
			if err == nil {
				err = errors.New("it returned without an error")
			}
			return fmt.Errorf("the processor stopped while waiting for %s: %w", what, err)
		case <-t.C:
		}
	}
	return nil
}

// throughput runs Config.Rounds rounds of the backlog, bare, chronicle and
// latency phases, each on topics of its own (and a broker of its own unless
// the brokers are given); latency runs on the round's processor. The ratio
// is the median of the rounds' ratios, and the rates reported are those of
// the round that gave it; likewise each share's latency is the round of the
// median p99's.
func (r *run) throughput(ctx context.Context, res *Result) error {
	cfg := r.cfg
	var samples []sample
	if cfg.has(PhaseBare) {
		// Distinct records for twice a transaction's commands at least, so
		// no transaction writes one record twice; made before the
		// allocations and CPU time are counted.
		var err error
		if samples, err = sampleRecords(max(4096, 2*cfg.CommitEvery)); err != nil {
			return fmt.Errorf("encoding the sample records: %w", err)
		}
	}
	type outcome struct {
		chronicle, bare *Throughput
		latency         []Latency // one per share
		bareLatency     []Latency // one per share, at the same rates
	}
	var rounds []outcome
	for i := range cfg.Rounds {
		prefix, last := r.prefix, i == cfg.Rounds-1
		if !last {
			prefix = fmt.Sprintf("%s-r%d", r.prefix, i)
		}
		chronicle, bare, rn, names, err := r.round(ctx, prefix, samples, cfg.has(PhaseLatency))
		if err != nil {
			return err
		}
		o := outcome{chronicle: chronicle, bare: bare}
		if rn != nil {
			// Latency at shares of this round's peak, on its processor and
			// broker: the bare loop's first (the processor waits idle),
			// while the broker holds less than for Chronicle's.
			if bare != nil {
				if o.bareLatency, err = r.bareLatencies(ctx, prefix, samples, chronicle.PerSecond); err != nil {
					_ = rn.stop()
					return err
				}
			}
			if o.latency, err = r.latencies(ctx, names, rn, chronicle.PerSecond); err != nil {
				return err
			}
		}
		rounds = append(rounds, o)
		if last {
			break
		}
		// The next round starts from an empty broker: one the run started
		// is started anew (an embedded kfake keeps in the heap what a
		// round wrote even after its topics are deleted); on a cluster,
		// the round's topics are deleted.
		if r.stopBroker != nil {
			r.close()
			if err := r.connect(ctx); err != nil {
				return err
			}
		} else {
			r.deleteTopicsOf(prefix)
		}
	}
	// The round of the median ratio (of the lower one of the two middle
	// ones for an even count); by rate when only one loop ran.
	rank := func(o outcome) float64 {
		switch {
		case o.chronicle != nil && o.bare != nil:
			return o.chronicle.PerSecond / o.bare.PerSecond
		case o.chronicle != nil:
			return o.chronicle.PerSecond
		default:
			return o.bare.PerSecond
		}
	}
	byRank := make([]int, len(rounds))
	for i := range byRank {
		byRank[i] = i
	}
	sort.SliceStable(byRank, func(a, b int) bool { return rank(rounds[byRank[a]]) < rank(rounds[byRank[b]]) })
	median := rounds[byRank[(len(byRank)-1)/2]]
	res.Chronicle, res.Bare = median.chronicle, median.bare
	if res.Chronicle != nil && res.Bare != nil {
		res.Ratio = res.Chronicle.PerSecond / res.Bare.PerSecond
		res.AllocsOverBare = res.Chronicle.AllocsPerCommand - res.Bare.AllocsPerCommand
		res.BytesOverBare = res.Chronicle.BytesPerCommand - res.Bare.BytesPerCommand
		for _, o := range rounds {
			res.RoundRatios = append(res.RoundRatios, rank(o))
		}
	}
	// At each share, the round of the median p99 (the lower one of the two
	// middle ones for an even count), with every round's p99.
	if len(rounds[0].latency) == 0 {
		return nil
	}
	for s := range cfg.LatencyShares {
		lats := make([]Latency, len(rounds))
		for i, o := range rounds {
			lats[i] = o.latency[s]
		}
		median := medianLatency(lats)
		if rounds[0].bareLatency != nil {
			bares := make([]Latency, len(rounds))
			for i, o := range rounds {
				bares[i] = o.bareLatency[s]
			}
			b := medianLatency(bares)
			median.Bare = &b
		}
		res.Latency = append(res.Latency, median)
	}
	return nil
}

// medianLatency returns, of one share's latency in each round, the round of
// the median p99 (the lower one of the two middle ones for an even count),
// with every round's p99 in round order. A round that lost results ranks
// above every one that did not: its p99 leaves out its slowest.
func medianLatency(rounds []Latency) Latency {
	p99s := make([]float64, len(rounds))
	rates := make([]float64, len(rounds))
	for i, l := range rounds {
		p99s[i], rates[i] = l.P99, l.Rate
	}
	ranked := slices.Clone(rounds)
	slices.SortStableFunc(ranked, func(a, b Latency) int {
		return cmp.Or(cmp.Compare(min(a.Missing, 1), min(b.Missing, 1)), cmp.Compare(a.P99, b.P99))
	})
	median := ranked[(len(ranked)-1)/2]
	median.RoundP99, median.RoundRate = p99s, rates
	return median
}

// latencies measures latency at each of the configured shares of peak
// commands/s with the running processor rn, then stops it.
func (r *run) latencies(ctx context.Context, names topics.Names, rn *running, peak float64) ([]Latency, error) {
	tgt := target{commands: names.Commands, results: names.Results, stopped: stoppedBy(rn.done, "the processor")}
	var out []Latency
	for _, share := range r.cfg.LatencyShares {
		lat, err := r.latency(ctx, tgt, share, peak, r.cfg.LatencyDuration)
		if err != nil {
			_ = rn.stop()
			return nil, fmt.Errorf("latency at %v of the peak: %w", share, err)
		}
		out = append(out, lat)
	}
	if err := rn.stop(); err != nil {
		return nil, fmt.Errorf("stopping the processor: %w", err)
	}
	return out, nil
}

// stoppedBy returns a target's stopped for a loop that sends its result
// on done (a channel of capacity 1) when it returns: the error it returned
// with, left on done for whoever stops it, or nil while it runs.
func stoppedBy(done chan error, what string) func() error {
	return func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("%s stopped: %v", what, err)
		default:
			return nil
		}
	}
}

// bareLatencies measures the bare loop's latency at the rates latency is
// measured at for Chronicle (shares of Chronicle's peak): the latency the
// broker and the machine allow at that load. The loop serves a topic set
// of prefix of its own, ending a transaction once a poll drains what was
// fetched, as the processor does; a short first window, not counted, lets
// it fetch from the topic's start before the clock runs.
func (r *run) bareLatencies(ctx context.Context, prefix string, samples []sample, peak float64) ([]Latency, error) {
	names, err := r.ensure(ctx, prefix+"-bare-serve", r.cfg.Partitions)
	if err != nil {
		return nil, err
	}
	serveCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	assigned := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, _, err := r.bareLoop(serveCtx, bareLoop{in: names.Commands, out: names, name: prefix + "-bare-serve", drain: true,
			assigned: func() { close(assigned) }}, samples)
		done <- err
	}()
	stop := func() error {
		cancel()
		return <-done
	}
	select {
	case <-assigned:
	case err := <-done:
		return nil, fmt.Errorf("the bare loop stopped before it was assigned partitions: %v", err)
	case <-ctx.Done():
		_ = stop()
		return nil, ctx.Err()
	}
	tgt := target{commands: names.Commands, results: names.Results, stopped: stoppedBy(done, "the bare loop")}
	var out []Latency
	for i, share := range r.cfg.LatencyShares {
		if i == 0 {
			if _, err := r.latency(ctx, tgt, share, peak, min(r.cfg.LatencyDuration, 200*time.Millisecond)); err != nil {
				_ = stop()
				return nil, fmt.Errorf("bare loop warming up: %w", err)
			}
		}
		lat, err := r.latency(ctx, tgt, share, peak, r.cfg.LatencyDuration)
		if err != nil {
			_ = stop()
			return nil, fmt.Errorf("bare loop latency at %v of Chronicle's peak: %w", share, err)
		}
		out = append(out, lat)
	}
	if err := stop(); err != nil {
		return nil, fmt.Errorf("stopping the bare loop: %w", err)
	}
	return out, nil
}

// round produces a backlog to the topics of prefix and works it off with
// the bare loop and then with Chronicle's processor, as far as the phases
// ask. With keep, it returns the processor still running (for the latency
// phase); otherwise it stops it.
func (r *run) round(ctx context.Context, prefix string, samples []sample, keep bool) (chronicle, bare *Throughput, _ *running, _ topics.Names, _ error) {
	cfg := r.cfg
	names, err := r.ensure(ctx, prefix, cfg.Partitions)
	if err != nil {
		return nil, nil, nil, names, err
	}
	def := order.Definition()
	err = r.produceAll(ctx, "backlog", func(yield func(*kgo.Record) bool) error {
		for k := range cfg.Commands {
			rec, _, err := command(def, k, cfg.Orders)
			if err != nil {
				return err
			}
			rec.Topic = names.Commands
			if !yield(rec) {
				return nil
			}
		}
		return nil
	}, int64(cfg.Commands))
	if err != nil {
		return nil, nil, nil, names, err
	}
	// The bare loop first: the embedded broker keeps what every phase
	// writes in this process's heap, so a later phase pays more for garbage
	// collection; the baseline does not get that advantage.
	if cfg.has(PhaseBare) {
		runtime.GC()
		before := memNow()
		elapsed, txns, err := r.bare(ctx, names, samples)
		if err != nil {
			return nil, nil, nil, names, fmt.Errorf("bare loop: %w", err)
		}
		bare = throughputOf(cfg.Commands, elapsed, memNow().since(before), txns)
	}
	if !cfg.has(PhaseChronicle) {
		return nil, bare, nil, names, nil
	}
	runtime.GC()
	before := memNow()
	// After the bare loop, whose group committed offsets on the commands
	// topic, the processor's group takes the topics over.
	takeOver := func(c *processor.Config) { c.TakeOver = cfg.has(PhaseBare) }
	rn, err := r.startProcessor(ctx, prefix, cfg.Partitions, takeOver)
	if err != nil {
		return nil, nil, nil, names, err
	}
	stopProgress := ticker(func() {
		cfg.Progress(Progress{Phase: PhaseChronicle, Done: rn.obs.committed.Load(), Total: int64(cfg.Commands)})
	})
	err = rn.wait(ctx, "the backlog to be worked off", func() bool { return rn.obs.committed.Load() >= int64(cfg.Commands) })
	stopProgress()
	if err != nil {
		_ = rn.stop()
		return nil, nil, nil, names, err
	}
	chronicle = throughputOf(cfg.Commands, rn.obs.elapsed(), memNow().since(before), rn.obs.txns.Load())
	if keep {
		return chronicle, bare, rn, names, nil
	}
	if err := rn.stop(); err != nil {
		return nil, nil, nil, names, fmt.Errorf("stopping the processor: %w", err)
	}
	return chronicle, bare, nil, names, nil
}

func throughputOf(n int, elapsed time.Duration, mem memDelta, txns int64) *Throughput {
	return &Throughput{Commands: n, Seconds: elapsed.Seconds(), PerSecond: float64(n) / elapsed.Seconds(),
		AllocsPerCommand: float64(mem.mallocs) / float64(n), BytesPerCommand: float64(mem.bytes) / float64(n),
		CPUPerCommand: float64(mem.cpu.Microseconds()) / float64(n), Transactions: txns}
}

// sample is the values Chronicle writes for one accepted command: its
// event, its state record and its result.
type sample struct{ event, state, result []byte }

// sampleRecords returns the values Chronicle writes for the last command of
// n different orders, each a CreateOrder and 1 to 9 AddLines over the
// backlog's five products: distinct ids, times and amounts, and orders of
// one to five lines, as the backlog's commands produce, so that the broker
// and the client's compression see what they see from Chronicle (copies of
// one record would compress to almost nothing).
func sampleRecords(n int) ([]sample, error) {
	def := order.Definition()
	now := time.Now()
	out := make([]sample, n)
	for i := range out {
		id := "o-" + strconv.Itoa(1_000_000+i)
		root := def.New(id)
		payloads := []any{order.CreateOrder{UserID: "u-" + id}}
		for r := range 1 + i%9 {
			p := int64(1 + r%products)
			payloads = append(payloads, order.AddLine{ProductID: p, Quantity: 1, UnitPrice: 100 * p})
		}
		for _, payload := range payloads {
			cmd, err := def.NewCommand(id, payload, aggregates.Metadata{})
			if err != nil {
				return nil, err
			}
			at := now.Add(time.Duration(i) * time.Microsecond)
			d, err := root.ExecuteEncoded(&cmd, at)
			if err != nil {
				return nil, err
			}
			res := aggregates.ResultFor(&cmd, "order", root.Version(), d.Events, nil)
			res.Time = at
			result, err := json.Marshal(res)
			if err != nil {
				return nil, err
			}
			out[i] = sample{event: d.Encoded[0], state: d.State, result: result}
		}
	}
	return out, nil
}

// bare runs the baseline: a GroupTransactSession that works off the
// backlog of the commands topic of names (see bareLoop).
func (r *run) bare(ctx context.Context, names topics.Names, samples []sample) (time.Duration, int64, error) {
	out, err := r.ensure(ctx, r.prefix+"-bare", r.cfg.Partitions)
	if err != nil {
		return 0, 0, err
	}
	return r.bareLoop(ctx, bareLoop{in: names.Commands, out: out, name: r.prefix + "-bare", until: int64(r.cfg.Commands)}, samples)
}

// bareLoop says what a bare loop reads and writes, and when it stops.
type bareLoop struct {
	in   string       // the commands topic
	out  topics.Names // the topics it writes to
	name string       // its group and transactional id
	// until is how many commands it handles before it returns; 0 serves
	// until ctx ends.
	until int64
	// drain ends a transaction once a poll leaves nothing buffered, as the
	// processor does: what latency is measured with. Working off a backlog
	// it ends one every CommitEvery commands (or CommitInterval).
	drain bool
	// assigned, when set, is called once the group assigned partitions.
	assigned func()
}

// bareLoop runs the baseline: a GroupTransactSession that writes, per
// command, an event and a state record to the command's partition and a
// result keyed by the command id, the next of samples (see sampleRecords),
// ending a transaction after CommitEvery commands or CommitInterval as the
// processor does. It returns the time from its first command to its last
// commit and how many transactions it committed.
func (r *run) bareLoop(ctx context.Context, l bareLoop, samples []sample) (time.Duration, int64, error) {
	cfg := r.cfg
	out := l.out
	next := 0
	opts := append(r.opts[:len(r.opts):len(r.opts)],
		kgo.ConsumerGroup(l.name), kgo.ConsumeTopics(l.in), kgo.TransactionalID(l.name),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.RequireStableFetchOffsets(), kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.RecordPartitioner(topics.Partitioner()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(10*time.Second), kgo.TransactionTimeout(time.Minute))
	if l.assigned != nil {
		var once sync.Once
		opts = append(opts, kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) { once.Do(l.assigned) }))
	}
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return 0, 0, fmt.Errorf("creating the transact session: %w", err)
	}
	defer sess.Close()
	var (
		done, txns int64
		count      int
		first      time.Time
		open       bool
		started    time.Time
		produceErr atomic.Pointer[error]
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			produceErr.CompareAndSwap(nil, &err)
		}
	}
	var shown atomic.Int64
	if l.until > 0 {
		stop := ticker(func() { cfg.Progress(Progress{Phase: PhaseBare, Done: shown.Load(), Total: l.until}) })
		defer stop()
	}
	for l.until == 0 || done < l.until {
		if err := ctx.Err(); err != nil {
			if l.until == 0 {
				return time.Since(first), txns, nil
			}
			return 0, 0, err
		}
		wait := time.Second
		if open {
			wait = max(cfg.CommitInterval-time.Since(started), time.Millisecond)
		}
		pollCtx, cancel := context.WithTimeout(ctx, wait)
		fs := sess.PollRecords(pollCtx, cfg.CommitEvery-count)
		cancel()
		if fs.IsClientClosed() {
			return 0, 0, errors.New("client closed")
		}
		if !fs.Empty() {
			if first.IsZero() {
				first = time.Now()
			}
			if !open {
				if err := sess.Begin(); err != nil {
					return 0, 0, fmt.Errorf("beginning a transaction: %w", err)
				}
				open, started = true, time.Now()
			}
			fs.EachRecord(func(rec *kgo.Record) {
				eventKey := append(append(make([]byte, 0, len(rec.Key)+21), rec.Key...), "@00000000000000000002"...)
				resultKey := rec.Key
				if len(rec.Value) > 33 && string(rec.Value[:7]) == `{"id":"` {
					resultKey = rec.Value[7:33]
				}
				sm := &samples[next]
				next = (next + 1) % len(samples)
				sess.Produce(ctx, &kgo.Record{Topic: out.Events, Partition: rec.Partition, Key: eventKey, Value: sm.event}, promise)
				sess.Produce(ctx, &kgo.Record{Topic: out.State, Partition: rec.Partition, Key: rec.Key, Value: sm.state}, promise)
				sess.Produce(ctx, &kgo.Record{Topic: out.Results, Partition: -1, Key: resultKey, Value: sm.result}, promise)
				count++
			})
		}
		// Drained as the processor tells it: nothing fetched is left.
		drained := l.drain && sess.Client().BufferedFetchRecords() == 0
		if open && (count >= cfg.CommitEvery || drained || time.Since(started) >= cfg.CommitInterval) {
			try := kgo.TryCommit
			if produceErr.Load() != nil {
				try = kgo.TryAbort
			}
			committed, err := sess.End(ctx, try)
			if err != nil && l.until == 0 && ctx.Err() != nil {
				return time.Since(first), txns, nil // served until ctx ended
			}
			if err != nil || !committed {
				return 0, 0, fmt.Errorf("ending a transaction (committed %v): %w", committed, errors.Join(err, deref(produceErr.Load())))
			}
			done += int64(count)
			txns++
			shown.Store(done)
			open, count = false, 0
		}
	}
	return time.Since(first), txns, nil
}

func deref(p *error) error {
	if p == nil {
		return nil
	}
	return *p
}
