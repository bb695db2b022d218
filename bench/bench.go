// Package bench measures Chronicle against the physical limit of its
// broker, in one run on one broker (an embedded kfake unless brokers are
// given): the processor working off a backlog of order commands next to a
// bare franz-go transactional loop writing the same records per command,
// command→result latency at fixed shares of the measured peak, full-replay
// and checkpoint-restore times, and allocations and CPU time per command. It is what
// `chronicle bench` runs; bench_test.go runs it as a Go benchmark.
//
// Every figure that compares two things is measured in the same run, so the
// ratios hold on a shared or noisy machine where absolute figures do not.
//
// # Phases
//
//   - backlog: Commands order commands over Orders orders (a CreateOrder per
//     order, then AddLines merging into five products) are produced to the
//     commands topic of a fresh topic set with Partitions partitions.
//   - bare: a franz-go GroupTransactSession reads the backlog in its own
//     group and writes, per command, the records Chronicle writes (an event
//     and a state record to the command's partition, a result keyed by the
//     command id), as varied as Chronicle's (thousands of distinct records
//     made by the order aggregate before the clock starts, so compression
//     does not make the baseline cheaper than Chronicle's writes), committing
//     every CommitEvery records. It runs before chronicle: the embedded
//     broker keeps what each phase writes in this process's heap, which
//     makes garbage collection dearer for later phases.
//   - chronicle: a processor (defaults but for CommitEvery and
//     CommitInterval) works the same backlog off in its own group; the clock runs from its first
//     handled command to the commit of its last.
//   - backlog, bare and chronicle run Rounds times, each round on an empty
//     broker (one started anew; on a cluster, topics of its own, deleted
//     once the round is over); the ratio is the median round's.
//   - latency: in each round, at each share of the rate Chronicle reached in
//     it, commands are sent at that rate (paced every millisecond, by a
//     producer lingering 1ms as producers batch) for LatencyDuration while
//     the same processor runs; each one's latency is the time from its
//     Produce call (linger included) to its result being read
//     (read_committed). A share's figures are those of the round of the
//     median p99, with every round's p99: one window of a few seconds on a
//     shared machine can hold a single stall that sets its p99. With the
//     bare phase, the bare loop's latency is measured first at the same
//     rates, in each round, on a topic set of its own, ending a
//     transaction once a poll drains what was fetched as the processor
//     does: the floor the broker and the machine set at that load.
//   - restore: ReplayEvents order events (100 per order) are written to a
//     one-partition events topic; a processor with an in-memory snapshot
//     store restores the first ReplayEvents-CheckpointBack of them and
//     checkpoints; the rest are appended; then one processor restores with a
//     full replay and one from the checkpoint. Their restore times come from
//     the processor's own Observer.Restored.
//
// Allocations are counted with runtime.MemStats over the chronicle and bare
// phases, the embedded broker's included when it runs inside the process;
// their difference per command is what Chronicle's own code allocates.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/topics"
)

// Phase names, for Config.Phases and Progress.
const (
	PhaseChronicle = "chronicle"
	PhaseBare      = "bare"
	PhaseLatency   = "latency"
	PhaseRestore   = "restore"
)

// Config says what to measure. Zero values take the documented defaults;
// Validate reports every problem at once.
type Config struct {
	// Brokers are the Kafka seed brokers; empty starts an embedded kfake
	// broker for the run.
	Brokers []string
	// StartBroker, when set and Brokers is empty, starts the broker of a
	// round (which also serves its latency phase; the last round's serves
	// the restore phase too)
	// and returns its seed addresses and a function that stops it; each
	// round gets a broker of its own. Nil runs an embedded kfake inside
	// this process, whose heap then holds everything the phases write and
	// whose garbage collection the measured loops share. chronicle bench
	// starts `chronicle dev --broker-only --in-memory` as a process of its
	// own. BrokerName names what it starts, for the report.
	StartBroker func(ctx context.Context) (brokers []string, stop func(), err error)
	BrokerName  string
	// KafkaOptions are extra franz-go options (TLS, SASL…) for every client.
	KafkaOptions []kgo.Opt
	// Phases to run (PhaseChronicle, PhaseBare, PhaseLatency,
	// PhaseRestore); nil runs all. Latency needs chronicle (its rates are
	// shares of the measured peak).
	Phases []string

	// Commands of the backlog over Orders orders in Partitions partitions.
	// Defaults 200000, 20000 and 6.
	Commands   int
	Orders     int
	Partitions int32
	// Rounds is how many times the backlog is produced anew and worked off
	// by the bare loop and then by Chronicle, each time on an empty broker
	// (see the package doc): the ratio reported is the median of the rounds' ratios, which a
	// shared or noisy machine moves far less than one round's. Default 3.
	Rounds int
	// CommitEvery and CommitInterval configure the processor (and
	// CommitEvery the bare loop). Defaults 1000 and 100ms, the processor's.
	CommitEvery    int
	CommitInterval time.Duration

	// LatencyShares are the shares of the measured peak at which latency is
	// measured, each for LatencyDuration, in every round (of that round's
	// peak). Defaults 0.1 and 0.5, for 3s.
	LatencyShares   []float64
	LatencyDuration time.Duration

	// ReplayEvents are the events of the restore phase, CheckpointBack of
	// them after the checkpoint. Defaults 1000000 and 10000.
	ReplayEvents   int
	CheckpointBack int
	// Snapshots is the snapshot store of the checkpoint restore (its
	// partition 0 of aggregate type "order" is overwritten); nil uses an
	// in-memory store.
	Snapshots RestoreStore

	// Progress, when set, is called as each phase advances (from the
	// goroutine that runs it, at most every 100ms per phase).
	Progress func(Progress)
	// Logger receives the processors' logs; nil discards them.
	Logger *slog.Logger
}

// Progress is how far a phase is.
type Progress struct {
	Phase       string
	Done, Total int64
}

func (c *Config) setDefaults() {
	if c.Phases == nil {
		c.Phases = []string{PhaseChronicle, PhaseBare, PhaseLatency, PhaseRestore}
	}
	if c.Commands == 0 {
		c.Commands = 200_000
	}
	if c.Orders == 0 {
		c.Orders = 20_000
	}
	if c.Partitions == 0 {
		c.Partitions = 6
	}
	if c.Rounds == 0 {
		c.Rounds = 3
	}
	if c.CommitEvery == 0 {
		c.CommitEvery = 1000
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = 100 * time.Millisecond
	}
	if c.LatencyShares == nil {
		c.LatencyShares = []float64{0.1, 0.5}
	}
	if c.LatencyDuration == 0 {
		c.LatencyDuration = 3 * time.Second
	}
	if c.ReplayEvents == 0 {
		c.ReplayEvents = 1_000_000
	}
	if c.CheckpointBack == 0 {
		c.CheckpointBack = 10_000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = func(Progress) {}
	}
}

func (c *Config) has(phase string) bool {
	for _, p := range c.Phases {
		if p == phase {
			return true
		}
	}
	return false
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	for _, p := range c.Phases {
		switch p {
		case PhaseChronicle, PhaseBare, PhaseLatency, PhaseRestore:
		default:
			errs = append(errs, fmt.Errorf("unknown phase %q: choose from %s, %s, %s, %s", p, PhaseChronicle, PhaseBare, PhaseLatency, PhaseRestore))
		}
	}
	if c.has(PhaseLatency) && !c.has(PhaseChronicle) {
		errs = append(errs, fmt.Errorf("phase %s needs phase %s: its rates are shares of the peak that one measures", PhaseLatency, PhaseChronicle))
	}
	if c.Orders < 1 {
		errs = append(errs, fmt.Errorf("orders %d: must be at least 1", c.Orders))
	}
	if c.Commands < c.Orders {
		errs = append(errs, fmt.Errorf("commands %d: must be at least the orders (%d), one CreateOrder each", c.Commands, c.Orders))
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("partitions %d: must be at least 1", c.Partitions))
	}
	if c.Rounds < 1 {
		errs = append(errs, fmt.Errorf("rounds %d: must be at least 1", c.Rounds))
	}
	if c.CommitEvery < 1 {
		errs = append(errs, fmt.Errorf("commit-every %d: must be at least 1", c.CommitEvery))
	}
	if c.CommitInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("commit-interval %v: must be at least 1ms", c.CommitInterval))
	}
	for _, s := range c.LatencyShares {
		if s <= 0 || s > 1 {
			errs = append(errs, fmt.Errorf("latency share %v: must be in (0, 1]", s))
		}
	}
	if c.LatencyDuration < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("latency duration %v: must be at least 10ms", c.LatencyDuration))
	}
	if c.CheckpointBack < 1 || c.ReplayEvents <= c.CheckpointBack {
		errs = append(errs, fmt.Errorf("replay events %d and checkpoint back %d: need 1 ≤ back < events", c.ReplayEvents, c.CheckpointBack))
	}
	return errors.Join(errs...)
}

// Result is what a run measured. Rates are per second, times in seconds,
// latencies in milliseconds.
type Result struct {
	Broker         string  `json:"broker"`
	GoMaxProcs     int     `json:"gomaxprocs"`
	Commands       int     `json:"commands"`
	Orders         int     `json:"orders"`
	Partitions     int32   `json:"partitions"`
	Rounds         int     `json:"rounds"`
	CommitEvery    int     `json:"commit_every"`
	CommitInterval float64 `json:"commit_interval_ms"`

	Chronicle *Throughput `json:"chronicle,omitempty"`
	Bare      *Throughput `json:"bare,omitempty"`
	// Ratio is Chronicle's rate over the bare loop's in the round whose
	// ratio is the median of RoundRatios; Chronicle and Bare are that
	// round's figures.
	Ratio float64 `json:"ratio,omitempty"`
	// RoundRatios is each round's ratio, in the order they ran.
	RoundRatios []float64 `json:"round_ratios,omitempty"`
	// AllocsOverBare and BytesOverBare are what Chronicle allocates per
	// command beyond the bare loop (the broker's share cancels out).
	AllocsOverBare float64 `json:"allocs_over_bare,omitempty"`
	BytesOverBare  float64 `json:"bytes_over_bare,omitempty"`

	Latency []Latency `json:"latency,omitempty"`
	Restore *Restore  `json:"restore,omitempty"`
}

// Throughput is one loop working off the backlog.
type Throughput struct {
	Commands  int     `json:"commands"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	// AllocsPerCommand and BytesPerCommand are the whole process's, the
	// embedded broker's included when it runs inside the process.
	AllocsPerCommand float64 `json:"allocs_per_command"`
	BytesPerCommand  float64 `json:"bytes_per_command"`
	// CPUPerCommand is the process's CPU time (user and system, every
	// goroutine, the embedded broker's included when it runs inside the
	// process) per command, in microseconds; 0 where the platform does not
	// tell. Unlike the rate, it
	// hardly depends on what else the machine runs.
	CPUPerCommand float64 `json:"cpu_us_per_command"`
	Transactions  int64   `json:"transactions"`
}

// Latency is command→result latency at one rate.
type Latency struct {
	Share    float64 `json:"share"`
	Rate     float64 `json:"rate"`     // commands/s asked for
	Achieved float64 `json:"achieved"` // commands/s sent
	Commands int     `json:"commands"`
	Missing  int     `json:"missing,omitempty"` // results not read within the wait
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	P999     float64 `json:"p999_ms"`
	Max      float64 `json:"max_ms"`
	// RoundP99 is every round's p99 at this share, in round order; the
	// other figures are those of the round of the median p99.
	RoundP99 []float64 `json:"round_p99_ms,omitempty"`
	// RoundRate is every round's rate at this share (commands/s asked, a
	// share of that round's own peak), in round order: a round whose peak
	// was high is asked for more.
	RoundRate []float64 `json:"round_rate,omitempty"`
	// Bare is the bare loop's latency at the same share of Chronicle's peak
	// in each round, when the bare phase runs: what the broker and the
	// machine allow at that load. Its figures are those of the round of its
	// own median p99, whose rate may be another round's.
	Bare *Latency `json:"bare,omitempty"`
}

// Restore compares a full replay with a checkpoint restore.
type Restore struct {
	Events              int     `json:"events"`
	Aggregates          int     `json:"aggregates"`
	Back                int     `json:"checkpoint_back"`
	FullSeconds         float64 `json:"full_seconds"`
	FullEventsPerSecond float64 `json:"full_events_per_second"`
	CheckpointSeconds   float64 `json:"checkpoint_seconds"`
	CheckpointEvents    int64   `json:"checkpoint_events"`
	// Speedup is the full replay's time over the checkpoint restore's.
	Speedup float64 `json:"speedup"`
	// Deferred is how many aggregates the checkpoint restore left to load
	// on first use (their events after the checkpoint are applied then),
	// and DeferredSeconds how long the checkpoint at the processor's stop,
	// its first, took to load them all: the cost the restore put off, which
	// CheckpointSeconds does not include.
	Deferred        int64   `json:"deferred_aggregates"`
	DeferredSeconds float64 `json:"deferred_seconds"`
}

// run is one benchmark run's shared parts.
type run struct {
	cfg        Config
	stopBroker func() // stops the broker the run started; nil on a cluster
	seeds      []string
	opts       []kgo.Opt // seed brokers and cfg.KafkaOptions
	admin      *kadm.Client
	base       *kgo.Client
	prefix     string
}

// Run measures what cfg asks for and returns the figures. It creates topics
// named chronicle-bench-<time>… and deletes them when it is done.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bench config: %w", err)
	}
	res := &Result{Broker: strings.Join(cfg.Brokers, ","), GoMaxProcs: runtime.GOMAXPROCS(0), Commands: cfg.Commands, Orders: cfg.Orders,
		Partitions: cfg.Partitions, Rounds: cfg.Rounds, CommitEvery: cfg.CommitEvery, CommitInterval: float64(cfg.CommitInterval) / float64(time.Millisecond)}
	if len(cfg.Brokers) == 0 {
		res.Broker = "embedded kfake, in this process"
		if cfg.StartBroker != nil {
			res.Broker = cmp.Or(cfg.BrokerName, "a broker started for each round")
		}
	}
	r := &run{cfg: cfg, prefix: fmt.Sprintf("chronicle-bench-%d", time.Now().UnixNano())}
	if err := r.connect(ctx); err != nil {
		return nil, err
	}
	defer r.close()
	defer r.deleteTopics()

	if cfg.has(PhaseChronicle) || cfg.has(PhaseBare) {
		if err := r.throughput(ctx, res); err != nil {
			return res, err
		}
	}
	if cfg.has(PhaseRestore) {
		rs, err := r.restore(ctx)
		if err != nil {
			return res, fmt.Errorf("restore phase: %w", err)
		}
		res.Restore = rs
	}
	return res, nil
}

// deleteTopics removes every topic of the run, best effort.
func (r *run) deleteTopics() {
	if r.admin == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	listed, err := r.admin.ListTopics(ctx)
	if err != nil {
		return
	}
	var names []string
	for _, t := range listed.Names() {
		if strings.HasPrefix(t, r.prefix) {
			names = append(names, t)
		}
	}
	if len(names) > 0 {
		_, _ = r.admin.DeleteTopics(ctx, names...)
	}
}

// connect starts the embedded broker when no brokers are configured, and
// connects the run's client to the broker.
func (r *run) connect(ctx context.Context) error {
	r.seeds = r.cfg.Brokers
	switch {
	case len(r.seeds) > 0:
	case r.cfg.StartBroker != nil:
		seeds, stop, err := r.cfg.StartBroker(ctx)
		if err != nil {
			return fmt.Errorf("starting the broker: %w", err)
		}
		r.seeds, r.stopBroker = seeds, stop
	default:
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
		if err != nil {
			return fmt.Errorf("starting the embedded Kafka broker: %w", err)
		}
		r.seeds, r.stopBroker = c.ListenAddrs(), c.Close
	}
	r.opts = append([]kgo.Opt{kgo.SeedBrokers(r.seeds...)}, r.cfg.KafkaOptions...)
	base, err := kgo.NewClient(r.opts...)
	if err != nil {
		r.close()
		return fmt.Errorf("creating kafka client: %w", err)
	}
	r.base, r.admin = base, kadm.NewClient(base)
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = base.Ping(pingCtx)
	cancel()
	if err != nil {
		r.close()
		return fmt.Errorf("connecting to Kafka %v: %w (check the broker addresses and the TLS and SASL settings)", r.seeds, err)
	}
	return nil
}

// close closes the run's client and stops the broker the run started.
func (r *run) close() {
	if r.base != nil {
		r.base.Close()
		r.base, r.admin = nil, nil
	}
	if r.stopBroker != nil {
		r.stopBroker()
		r.stopBroker = nil
	}
}

// deleteTopicsOf deletes the topics of prefix.
func (r *run) deleteTopicsOf(prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := topics.For(prefix)
	_, _ = r.admin.DeleteTopics(ctx, n.Commands, n.Events, n.State, n.Results, n.DLQ, n.Meta)
}

// ensure creates the topics of prefix with n partitions.
func (r *run) ensure(ctx context.Context, prefix string, n int32) (topics.Names, error) {
	names := topics.For(prefix)
	if _, err := topics.Ensure(ctx, r.base, names, topics.Spec{Partitions: n, ReplicationFactor: -1}); err != nil {
		return names, fmt.Errorf("creating the topics of %s: %w", prefix, err)
	}
	return names, nil
}

// memDelta measures allocations and the process's CPU time between two
// points.
type memDelta struct {
	mallocs, bytes uint64
	cpu            time.Duration // 0 where the platform does not tell
}

func memNow() memDelta {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memDelta{m.Mallocs, m.TotalAlloc, processCPU()}
}

func (d memDelta) since(before memDelta) memDelta {
	return memDelta{d.mallocs - before.mallocs, d.bytes - before.bytes, d.cpu - before.cpu}
}

// ticker calls fn every 100ms until the returned stop is called.
func ticker(fn func()) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() { close(done); <-finished; fn() }
}
