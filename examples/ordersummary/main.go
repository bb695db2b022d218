// Command ordersummary is a read model of the orders: one row per order in
// PostgreSQL with its status, line count and total, kept by a projection
// (package projection) that applies every order event exactly once, however
// often it is killed and restarted, and however many instances run.
//
//	ordersummary --brokers localhost:9092 --database postgres://localhost/shop
//
// See README.md in this directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/projection"
	"github.com/chronicle-es/chronicle/projection/postgres"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ordersummary:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ordersummary", flag.ContinueOnError)
	brokers := fs.String("brokers", envOr("CHRONICLE_BROKERS", "127.0.0.1:9092"), "Kafka brokers, host:port[,host:port] (env CHRONICLE_BROKERS)")
	database := fs.String("database", os.Getenv("DATABASE_URL"), "PostgreSQL URL, e.g. postgres://user@localhost/shop (env DATABASE_URL)")
	prefix := fs.String("prefix", "orders", "the order aggregate's topic prefix: it reads <prefix>.events")
	name := fs.String("name", "order_summaries", "the projection's name: its positions and consumer group")
	rebuild := fs.Bool("rebuild", false, "empty the read model and its positions first, then replay every event")
	skip := fs.Bool("skip-undecodable", false, "pass over events this build cannot decode (with a warning each) instead of stopping")
	batch := fs.Int("batch", 500, "most events applied in one transaction")
	session := fs.Duration("session-timeout", 45*time.Second, "how soon the consumer group gives a dead instance's partitions to the others (it also bounds a rebalance)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *database == "" {
		return errors.New("no database: set --database or DATABASE_URL to a PostgreSQL URL")
	}
	pool, err := pgxpool.New(ctx, *database)
	if err != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer pool.Close()
	if err := postgres.CreateTables(ctx, pool, Schema); err != nil {
		return fmt.Errorf("creating the read model's tables: %w", err)
	}
	store, err := postgres.NewStore(ctx, pool)
	if err != nil {
		return err
	}
	p, err := projection.New(projection.Config[pgx.Tx]{
		Name: *name,
		Kafka: client.Kafka{Brokers: strings.Split(*brokers, ","), Options: []kgo.Opt{
			kgo.SessionTimeout(*session), kgo.RebalanceTimeout(*session), kgo.HeartbeatInterval(min(3*time.Second, *session/10)),
		}},
		Prefixes:        []string{*prefix},
		Decoder:         order.Definition(),
		Store:           store,
		Handlers:        handlers(),
		Reset:           reset,
		SkipUndecodable: *skip,
		BatchSize:       *batch,
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return err
	}
	if *rebuild {
		if err := p.Rebuild(ctx); err != nil {
			return err
		}
	}
	return p.Run(ctx)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
