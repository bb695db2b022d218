package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/chronicle-es/chronicle/processor"
)

func runRun(ctx context.Context, args []string, s streams) int {
	fs := newFlags("run", "run [flags]", s.err)
	var k kafkaFlags
	k.register(fs, "")
	group := fs.String("group", "chronicle", "consumer group shared by all instances")
	txnID := fs.String("transactional-id", "", "stable, unique transactional id of this instance (default chronicle-<hostname>)")
	aggs := fs.String("aggregates", defaultAggregates, "topic prefix=aggregate type pairs to serve")
	partitions := fs.Int("partitions", 6, "partitions of topics created at start-up")
	replication := fs.Int("replication-factor", -1, "replication factor of topics created at start-up (-1: broker default)")
	commitEvery := fs.Int("commit-every", 1000, "end a transaction after this many commands")
	commitInterval := fs.Duration("commit-interval", 100*time.Millisecond, "end a transaction after this long")
	maxBytes := fs.Int("max-command-bytes", 1<<20, "largest command accepted; larger ones are invalid and go to the DLQ")
	concurrency := fs.Int("concurrency", 0, "partitions processed at once (default 2×CPUs)")
	sessionTimeout := fs.Duration("session-timeout", 45*time.Second, "consumer group session timeout")
	txnTimeout := fs.Duration("transaction-timeout", 60*time.Second, "Kafka transaction timeout")
	shutdown := fs.Duration("shutdown-timeout", 10*time.Second, "bound on a graceful shutdown")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if _, code, done := parseFlags(fs, args); done {
		return code
	}
	opts, err := k.options()
	if err != nil {
		return fail(s, "run", err)
	}
	bindings, err := parseBindings(*aggs)
	if err != nil {
		return fail(s, "run", err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fail(s, "run", err)
	}
	logger := slog.New(slog.NewJSONHandler(s.err, &slog.HandlerOptions{Level: level}))
	p, err := processor.New(processor.Config{
		Brokers: k.brokerList(), KafkaOptions: opts, Group: *group, TransactionalID: *txnID,
		Aggregates: bindings, Partitions: int32(*partitions), ReplicationFactor: int16(*replication),
		CommitEvery: *commitEvery, CommitInterval: *commitInterval, MaxCommandBytes: *maxBytes,
		Concurrency: *concurrency, SessionTimeout: *sessionTimeout, TransactionTimeout: *txnTimeout,
		ShutdownTimeout: *shutdown, Logger: logger,
	})
	if err != nil {
		return fail(s, "run", err)
	}
	logger.Info("chronicle starting", "brokers", k.brokerList(), "group", *group, "aggregates", *aggs)
	if err := p.Run(ctx); err != nil {
		return fail(s, "run", err)
	}
	logger.Info("chronicle stopped")
	return 0
}
