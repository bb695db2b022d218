package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/processor"
	"github.com/chronicle-es/chronicle/snapshots"
	"github.com/chronicle-es/chronicle/tracing"
)

const runSynopsis = `run --brokers HOST:PORT,... --aggregates PREFIX=TYPE,... [flags]

Runs the production processor: it consumes the commands of the aggregate
types given with --aggregates from PREFIX.commands, lets each aggregate
decide, and appends the events, state and results to Kafka exactly once.
Instances with one --group share the partitions; each needs a stable,
unique --transactional-id. It creates missing topics at start-up. It logs
JSON to stderr, serves /metrics, /livez and /readyz on --admin-addr, and
stops gracefully on SIGTERM or Ctrl-C. Redis (--redis) keeps snapshots and
checkpoints so restores are short; without it, restores replay everything.

Examples:
  {prog} run --brokers k1:9092,k2:9092 --aggregates {prefix}={kind} --transactional-id {prog}-0
  {prog} run --brokers k1:9093 --tls --sasl-mechanism SCRAM-SHA-512 --sasl-user {prog} \
      --aggregates {prefix}={kind} --redis rediss://:PASSWORD@redis:6380/0
  CHRONICLE_BROKERS=k1:9092 CHRONICLE_AGGREGATES={prefix}={kind} CHRONICLE_SASL_PASSWORD=... {prog} run`

func runRun(ctx context.Context, args []string, s *session) int {
	fs := newFlags("run", runSynopsis, s)
	var k kafkaFlags
	k.register(fs, "")
	group := fs.String("group", "chronicle", "consumer group shared by all instances; the topics remember the group that serves them and refuse another")
	takeOver := fs.Bool("take-over", false, "let --group take the topics over from the group that serves them (stop that group's processors first, or both process every command)")
	txnID := fs.String("transactional-id", "", "stable, unique transactional id of this instance (default chronicle-<hostname>)")
	aggs := fs.String("aggregates", "", "topic prefix=aggregate type pairs to serve, e.g. "+s.kinds.defaultSpec()+" (required)")
	partitions := fs.Int("partitions", 6, "partitions of topics created at start-up")
	replication := fs.Int("replication-factor", -1, "replication factor of topics created at start-up; -1 lets the broker choose")
	commitEvery := fs.Int("commit-every", 1000, "end a transaction after this many commands")
	commitInterval := fs.Duration("commit-interval", 100*time.Millisecond, "end a transaction after this long")
	maxBytes := fs.Int("max-command-bytes", 1<<20, "largest command accepted; larger ones are invalid and go to the DLQ")
	concurrency := fs.Int("concurrency", 0, "partitions processed at once (default 2×CPUs)")
	sessionTimeout := fs.Duration("session-timeout", 45*time.Second, "consumer group session timeout")
	txnTimeout := fs.Duration("transaction-timeout", 60*time.Second, "Kafka transaction timeout")
	shutdown := fs.Duration("shutdown-timeout", 10*time.Second, "bound on a graceful shutdown")
	redisURL := fs.String("redis", "", "Redis URL for snapshots: redis://[user:pass@]host:port/db, rediss:// for TLS, ?cluster=true or several hosts for Cluster, ?sentinel_master=name for Sentinel (empty: no snapshots, restores replay everything)")
	cacheSize := fs.Int("cache-size", 100000, "aggregates kept in memory per partition (with --redis)")
	cpEvents := fs.Int("checkpoint-events", 10000, "checkpoint a partition after this many events (with --redis)")
	cpInterval := fs.Duration("checkpoint-interval", 30*time.Second, "checkpoint a partition after this long (with --redis)")
	logLevel := fs.String("log-level", "info", "least severe level logged: debug, info, warn or error")
	var adm adminFlags
	adm.register(fs, ":9400")
	if _, code, done := parseFlags(fs, args); done {
		return code
	}
	opts, err := k.options()
	if err != nil {
		return fail(s, "run", err)
	}
	if strings.TrimSpace(*aggs) == "" {
		// Serving every type by default would create their topics on
		// whatever cluster --brokers names.
		return fail(s, "run", fmt.Errorf("no aggregate types to serve: pass --aggregates (or set CHRONICLE_AGGREGATES) to the topic prefix=type pairs to serve, "+
			"e.g. --aggregates %s; run creates the missing topics of those it is given", s.kinds.defaultSpec()))
	}
	bindings, err := s.kinds.parseBindings(*aggs)
	if err != nil {
		return fail(s, "run", err)
	}
	level, err := parseLogLevel(*logLevel)
	if err != nil {
		return fail(s, "run", err)
	}
	logger := slog.New(slog.NewJSONHandler(s.err, &slog.HandlerOptions{Level: level, ReplaceAttr: durationsWithUnits}))
	routeRedisLogs(logger)
	var store processor.SnapshotStore
	if *redisURL != "" {
		rs, err := snapshots.Open(*redisURL)
		if err != nil {
			return fail(s, "run", err)
		}
		defer rs.Close()
		if err := pingStore(ctx, rs); err != nil && (strings.Contains(err.Error(), "WRONGPASS") || strings.Contains(err.Error(), "NOAUTH")) {
			return fail(s, "run", fmt.Errorf("redis %s: %w (check the user and password in --redis)", redactURL(*redisURL), err))
		} else if err != nil {
			// Redis only speeds restores up: start anyway, restoring from
			// Kafka; snapshots resume when it answers.
			logger.Warn("Redis unreachable at start; restoring from Kafka alone until it answers", "redis", redactURL(*redisURL), "err", err)
		}
		store = rs
	}
	observer, startAdmin, kafkaMetrics, err := adm.instrument(ctx, logger)
	if err != nil {
		return fail(s, "run", err)
	}
	tracer, stopTracing, err := tracing.FromEnv(ctx)
	if err != nil {
		return fail(s, "run", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			logger.Warn("flushing traces failed", "err", err)
		}
	}()
	p, err := processor.New(processor.Config{
		Observer: observer, Tracer: tracer, SessionOptions: []kgo.Opt{kafkaMetrics},
		Snapshots: store, CacheSize: *cacheSize, CheckpointEvents: *cpEvents, CheckpointInterval: *cpInterval,
		Brokers: k.brokerList(), KafkaOptions: opts, Group: *group, TakeOver: *takeOver, TransactionalID: *txnID,
		Aggregates: bindings, Partitions: int32(*partitions), ReplicationFactor: int16(*replication),
		CommitEvery: *commitEvery, CommitInterval: *commitInterval, MaxCommandBytes: *maxBytes,
		Concurrency: *concurrency, SessionTimeout: *sessionTimeout, TransactionTimeout: *txnTimeout,
		ShutdownTimeout: *shutdown, Logger: logger,
	})
	if err != nil {
		return fail(s, "run", err)
	}
	if err := startAdmin(p); err != nil {
		return fail(s, "run", err)
	}
	logger.Info("chronicle starting", "brokers", k.brokerList(), "group", *group, "aggregates", *aggs, "redis", redactURL(*redisURL))
	if err := p.Run(ctx); err != nil {
		return fail(s, "run", err)
	}
	logger.Info("chronicle stopped")
	return 0
}

// pingStore tells early about wrong Redis credentials or address: one
// checkpoint read of a partition that does not exist.
func pingStore(ctx context.Context, rs *snapshots.Redis) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, _, err := rs.Checkpoint(ctx, "chronicle-ping", 0)
	return err
}

// redactURL hides the password of a URL for logs and messages.
func redactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// parseLogLevel reads a --log-level: debug, info, warn or error, in any
// case (slog's offsets such as "info+2" are accepted too).
func parseLogLevel(v string) (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(v)); err != nil {
		return 0, fmt.Errorf("--log-level %q: use debug, info, warn or error", v)
	}
	return level, nil
}

// durationsWithUnits makes a log handler write durations as Go duration
// strings ("1.5s", "250ms") rather than as a bare number of nanoseconds,
// which is what slog's JSON handler writes for a time.Duration.
func durationsWithUnits(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
