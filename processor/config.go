package processor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/topics"
)

// Binding serves one aggregate type from the topics with one prefix.
type Binding struct {
	// Kind is the aggregate type, e.g. order.Definition().
	Kind aggregates.Kind
	// Prefix names its topics ("orders" → orders.commands, orders.events…).
	Prefix string
}

// Config configures a Processor. Zero values take the documented defaults;
// Validate reports every problem at once.
type Config struct {
	// Brokers are the Kafka seed brokers, host:port.
	Brokers []string
	// KafkaOptions are extra franz-go options (TLS, SASL, dialer...) added
	// to every client the processor creates. They come after the
	// processor's own, so they override them: its producer does not linger
	// (kgo.ProducerLinger(0); see docs/architecture.md), which
	// kgo.ProducerLinger here changes. Pools given with kgo.WithPools
	// reach every client too, but only a full replay's reader hands its
	// fetched records back to them (kgo.Record.Recycle).
	KafkaOptions []kgo.Opt
	// SessionOptions are extra franz-go options for the consumer-group
	// session's client only, of which there is one at a time: for hooks
	// that expect a single client, such as kprom's client metrics
	// (kgo.WithHooks(kprom.NewMetrics(...))).
	SessionOptions []kgo.Opt
	// Group is the consumer group shared by all instances. Default "chronicle".
	Group string
	// TransactionalID must be stable per instance and unique across live
	// instances: a restarted instance with the same id fences its dead
	// predecessor's open transaction at once. Default "chronicle-<hostname>".
	TransactionalID string
	// Aggregates are the aggregate types to serve.
	Aggregates []Binding
	// TakeOver lets this Group take the topics over from the consumer group
	// that serves them (see topics.ClaimGroup). Stop the other group's
	// processors first, or both process every command.
	TakeOver bool

	// Partitions and ReplicationFactor are used to create missing topics.
	// Defaults 6 and -1 (broker default).
	Partitions        int32
	ReplicationFactor int16

	// A transaction ends as soon as every fetched command is handled, so
	// that a command is answered about one transaction round trip after it
	// arrives, and transactions grow with the load: up to CommitEvery
	// commands (default 1000) or CommitInterval (default 100ms), whichever
	// comes first.
	CommitEvery    int
	CommitInterval time.Duration
	// MaxCommandBytes is the largest command value accepted; larger ones get
	// an invalid result and go to the DLQ. Default 1 MiB.
	MaxCommandBytes int
	// Concurrency bounds how many goroutines decide commands at the same
	// time: partitions are processed in parallel, and a batch of fewer
	// partitions than min(Concurrency, GOMAXPROCS) has each partition's
	// commands decided by several workers, split by aggregate. Commands of
	// one aggregate are always decided in order, and what a partition's
	// commands produce is written in offset order. Default 2×GOMAXPROCS.
	Concurrency int

	// SessionTimeout, RebalanceTimeout and TransactionTimeout tune the
	// consumer group and the transactional producer. Defaults 45s, 60s, 60s.
	SessionTimeout     time.Duration
	RebalanceTimeout   time.Duration
	TransactionTimeout time.Duration
	// ShutdownTimeout bounds each step of a graceful shutdown: finishing
	// the open transaction, loading what checkpoint restores deferred for
	// the last checkpoints (all partitions together), and leaving the
	// group. Default 10s.
	ShutdownTimeout time.Duration

	// Snapshots, when set, keeps snapshots and checkpoints so that a
	// partition restore replays only the events since its last checkpoint,
	// and lets the cache below evict aggregates. Nil replays everything and
	// keeps every aggregate in memory.
	Snapshots SnapshotStore
	// CheckpointEvents and CheckpointInterval: a partition is checkpointed
	// after this many new events or this long, whichever comes first, and
	// on revoke and shutdown. Defaults 10000 and 30s.
	CheckpointEvents   int
	CheckpointInterval time.Duration
	// CacheSize bounds how many aggregates each partition keeps in memory
	// when Snapshots is set; the least recently used are evicted after
	// their changes are saved. 0 means the default, 100000.
	CacheSize int

	// Tracer, when set, traces every command: a span continuing the
	// command's W3C traceparent (record header or metadata), whose context
	// its events and result carry on. Nil traces nothing, at no cost.
	// Package tracing builds one from the OTEL_* environment.
	Tracer trace.Tracer

	// Observer receives what the processor does, for metrics (see package
	// metrics); nil observes nothing.
	Observer Observer

	// Logger receives the processor's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock stamping events; nil uses time.Now.
	Now func() time.Time
	// realClock: Now is time.Now, so a command's stamp can be the time
	// read when its handling began (time.Now is not free).
	realClock bool
}

func (c *Config) setDefaults() {
	if c.Group == "" {
		c.Group = "chronicle"
	}
	if c.TransactionalID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "localhost"
		}
		c.TransactionalID = "chronicle-" + host
	}
	if c.Partitions == 0 {
		c.Partitions = 6
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	if c.CommitEvery == 0 {
		c.CommitEvery = 1000
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = 100 * time.Millisecond
	}
	if c.MaxCommandBytes == 0 {
		c.MaxCommandBytes = 1 << 20
	}
	if c.Concurrency == 0 {
		c.Concurrency = 2 * runtime.GOMAXPROCS(0)
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 45 * time.Second
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = 60 * time.Second
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = 60 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.CheckpointEvents == 0 {
		c.CheckpointEvents = 10000
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = 30 * time.Second
	}
	if c.CacheSize == 0 {
		c.CacheSize = 100000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now, c.realClock = time.Now, true
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers: set Brokers (--brokers) to host:port of at least one Kafka broker"))
	}
	if len(c.Aggregates) == 0 {
		errs = append(errs, errors.New("no aggregate types to serve: add at least one Binding"))
	}
	prefixes := map[string]bool{}
	for i, b := range c.Aggregates {
		if b.Kind == nil {
			errs = append(errs, fmt.Errorf("aggregate binding %d has no Kind", i))
		}
		if b.Prefix == "" {
			errs = append(errs, fmt.Errorf("aggregate binding %d has no topic prefix", i))
		}
		if prefixes[b.Prefix] {
			errs = append(errs, fmt.Errorf("topic prefix %q is used twice", b.Prefix))
		}
		prefixes[b.Prefix] = true
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("partitions %d: must be at least 1", c.Partitions))
	}
	if c.CommitEvery < 1 {
		errs = append(errs, fmt.Errorf("commit-every %d: must be at least 1", c.CommitEvery))
	}
	if c.CommitInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("commit-interval %v: must be at least 1ms", c.CommitInterval))
	}
	if c.TransactionTimeout <= c.CommitInterval {
		errs = append(errs, fmt.Errorf("transaction timeout %v must exceed the commit interval %v", c.TransactionTimeout, c.CommitInterval))
	}
	if c.MaxCommandBytes < 1 {
		errs = append(errs, fmt.Errorf("max command bytes %d: must be positive", c.MaxCommandBytes))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency %d: must be at least 1", c.Concurrency))
	}
	if c.CacheSize < 1 {
		errs = append(errs, fmt.Errorf("cache size %d: must be at least 1", c.CacheSize))
	}
	if c.CheckpointEvents < 1 {
		errs = append(errs, fmt.Errorf("checkpoint events %d: must be at least 1", c.CheckpointEvents))
	}
	return errors.Join(errs...)
}

// binding is a Binding with its topic names resolved.
type binding struct {
	kind  aggregates.Kind
	names topics.Names
	n     int32 // partitions of the commands topic
	// eventsTopicID is the events topic's Kafka id: checkpoints carry it,
	// so one of an earlier, deleted topic of the same name is not trusted.
	eventsTopicID string
	commandTypes  []string // qualified and short names, for metric labels
}
