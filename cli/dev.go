package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/devstack"
)

func runDev(ctx context.Context, args []string, s streams) int {
	fs := newFlags("dev", "dev [flags]", s.err)
	addr := fs.String("kafka-addr", "127.0.0.1:9092", "address of the embedded Kafka broker (127.0.0.1:<port>; port 0 picks a free one)")
	dataDir := fs.String("data-dir", filepath.Join(".chronicle", "kafka"), "directory keeping the broker's data between runs")
	inMemory := fs.Bool("in-memory", false, "keep nothing on disk")
	partitions := fs.Int("partitions", 6, "partitions of each topic created")
	aggs := fs.String("aggregates", defaultAggregates, "topic prefix=aggregate type pairs to serve")
	redisURL := fs.String("redis", "", "Redis URL for snapshots (redis://, rediss://); empty embeds an in-memory miniredis")
	verbose := fs.Bool("verbose", false, "log the processor's progress")
	var adm adminFlags
	adm.register(fs, "127.0.0.1:9400")
	brokerOnly := fs.Bool("broker-only", false, "run only the embedded Kafka broker: no Redis, no topics, no processor (--partitions, --aggregates, --redis and --verbose do not apply); "+
		"on SIGTERM or Ctrl-C it saves its data directory and exits, so it can be restarted on the same address and data")
	if _, code, done := parseFlags(fs, args); done {
		return code
	}
	store := *dataDir
	if *inMemory {
		store = "memory only"
	}
	if *brokerOnly {
		cfg := devstack.Config{
			KafkaAddr: *addr, DataDir: *dataDir, InMemory: *inMemory, BrokerOnly: true,
			Ready: func(brokers []string, _ string) {
				fmt.Fprintf(s.out, "chronicle dev is running (broker only)\n")
				fmt.Fprintf(s.out, "  kafka:      %s (embedded kfake, data: %s)\n", strings.Join(brokers, ","), store)
			},
		}
		if err := devstack.Run(ctx, cfg); err != nil {
			return fail(s, "dev", err)
		}
		fmt.Fprintln(s.out, "chronicle dev stopped")
		return 0
	}
	bindings, err := parseBindings(*aggs)
	if err != nil {
		return fail(s, "dev", err)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(s.err, &slog.HandlerOptions{Level: level}))
	observer, startAdmin, kafkaMetrics, err := adm.instrument(ctx, logger)
	if err != nil {
		return fail(s, "dev", err)
	}
	cfg := devstack.Config{
		KafkaAddr: *addr, DataDir: *dataDir, InMemory: *inMemory, Partitions: int32(*partitions),
		Aggregates: bindings, Logger: logger, RedisURL: *redisURL, Observer: observer, Started: startAdmin, SessionOptions: []kgo.Opt{kafkaMetrics},
		Ready: func(brokers []string, redisAddr string) {
			var prefixes []string
			for _, b := range bindings {
				prefixes = append(prefixes, fmt.Sprintf("%s (%s)", b.Prefix, b.Kind.Name()))
			}
			fmt.Fprintf(s.out, "chronicle dev is running\n")
			fmt.Fprintf(s.out, "  kafka:      %s (embedded kfake, data: %s)\n", strings.Join(brokers, ","), store)
			fmt.Fprintf(s.out, "  aggregates: %s\n", strings.Join(prefixes, ", "))
			if *redisURL == "" {
				fmt.Fprintf(s.out, "  snapshots:  embedded Redis (miniredis) on %s, in memory\n", redisAddr)
			} else {
				fmt.Fprintf(s.out, "  snapshots:  %s\n", redactURL(*redisURL))
			}
			if adm.listening != "off" {
				fmt.Fprintf(s.out, "  admin:      http://%s/metrics, /livez, /readyz\n", adm.listening)
			}
			fmt.Fprintf(s.out, "\nTry, in another terminal:\n")
			flag := ""
			if brokers[0] != "127.0.0.1:9092" { // the tools' default
				flag = " --brokers " + brokers[0]
			}
			fmt.Fprintf(s.out, "  go run ./cmd/chronicle send%s --wait orders o-1 CreateOrder '{\"user_id\":\"u-1\"}'\n", flag)
			fmt.Fprintf(s.out, "  go run ./cmd/chronicle tail%s orders --from-beginning\n", flag)
			fmt.Fprintf(s.out, "  go run ./cmd/chronicle history%s orders o-1\n", flag)
			fmt.Fprintf(s.out, "\nPress Ctrl-C to stop.\n")
		},
	}
	if err := devstack.Run(ctx, cfg); err != nil {
		return fail(s, "dev", err)
	}
	fmt.Fprintln(s.out, "chronicle dev stopped")
	return 0
}
