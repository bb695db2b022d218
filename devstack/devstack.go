// Package devstack runs Chronicle's whole stack in one process for
// development: an embedded Kafka-protocol broker (franz-go's kfake), an
// embedded Redis (miniredis) for snapshots unless a Redis URL is given, and
// the processor serving the given aggregate types. Nothing needs installing.
//
// With Config.BrokerOnly it runs the broker alone, so tests can run
// processors as separate processes against it and stop and restart the
// broker on the same port and data directory.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/processor"
	"github.com/chronicle-es/chronicle/snapshots"
)

// Config configures the dev stack.
type Config struct {
	// KafkaAddr is where the embedded broker listens. It must be a
	// 127.0.0.1 address. Default "127.0.0.1:9092"; port 0 picks a free one.
	KafkaAddr string
	// DataDir keeps the broker's data between runs. Empty with InMemory.
	// Run holds it exclusively (a flock on a file in it, on Linux, macOS and
	// the BSDs) and fails with
	// ErrDataDirInUse when another dev stack holds it.
	DataDir string
	// InMemory keeps nothing on disk.
	InMemory bool
	// Partitions for the topics the processor creates. Default 6.
	Partitions int32
	// Aggregates to serve.
	Aggregates []processor.Binding
	// RedisURL is the Redis keeping snapshots; empty starts an embedded
	// miniredis (in memory: a restart replays from Kafka, which is safe).
	RedisURL string
	// Logger for the processor; nil discards.
	Logger *slog.Logger
	// BrokerOnly runs only the embedded broker: no Redis, no topics, no
	// processor (Partitions, Aggregates, RedisURL and Logger are unused).
	// When ctx ends the broker closes cleanly, saving its data to DataDir.
	BrokerOnly bool
	// Observer receives what the processor does (see package metrics).
	Observer processor.Observer
	// SessionOptions go to the processor's group-session client (see
	// processor.Config.SessionOptions).
	SessionOptions []kgo.Opt
	// Started, if set, is called with the processor once it is created,
	// before it runs (for /readyz and metrics); an error stops Run.
	Started func(p *processor.Processor) error
	// Ready, if set, is called once the broker listens and the topics
	// exist, with the broker addresses and the Redis address in use (""
	// with BrokerOnly, which calls it as soon as the broker listens).
	Ready func(brokers []string, redisAddr string)
}

// ErrDataDirInUse is returned by Run when another dev stack (another
// process, or another Run in this one) holds Config.DataDir.
var ErrDataDirInUse = errors.New("data directory in use")

// Run starts the broker and, unless cfg.BrokerOnly, the processor, and
// blocks until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.KafkaAddr == "" {
		cfg.KafkaAddr = "127.0.0.1:9092"
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 6
	}
	host, portStr, err := net.SplitHostPort(cfg.KafkaAddr)
	if err != nil || host != "127.0.0.1" {
		return fmt.Errorf("kafka address %q: must be 127.0.0.1:<port>", cfg.KafkaAddr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("kafka address %q: bad port: %w", cfg.KafkaAddr, err)
	}
	if !cfg.InMemory && cfg.DataDir == "" {
		return errors.New("no data directory: set one, or choose in-memory")
	}
	if !cfg.InMemory {
		// Two brokers on one data directory would both write it, and
		// commands sent to one would never get a result from the other.
		unlock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer unlock() // after cluster.Close has saved the data
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100 * time.Millisecond)}
	if port != 0 { // kfake picks a free port itself otherwise
		opts = append(opts, kfake.Ports(port))
	}
	if !cfg.InMemory {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("starting the embedded Kafka broker on %s: %w (is another one running? pick another port)", cfg.KafkaAddr, err)
	}
	// Close saves the broker's data to DataDir before it returns.
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	if cfg.BrokerOnly {
		if cfg.Ready != nil {
			cfg.Ready(brokers, "")
		}
		<-ctx.Done()
		return nil
	}
	redisURL, redisAddr := cfg.RedisURL, ""
	if redisURL == "" {
		mini := miniredis.NewMiniRedis()
		if err := mini.StartAddr("127.0.0.1:0"); err != nil {
			return fmt.Errorf("starting the embedded Redis: %w", err)
		}
		defer mini.Close()
		redisAddr = mini.Addr()
		redisURL = "redis://" + redisAddr
	} else {
		redisAddr = "external"
	}
	store, err := snapshots.Open(redisURL)
	if err != nil {
		return fmt.Errorf("snapshot store: %w", err)
	}
	defer store.Close()
	p, err := processor.New(processor.Config{
		Snapshots:        store,
		Brokers:          brokers,
		Group:            "chronicle-dev",
		TransactionalID:  "chronicle-dev",
		Aggregates:       cfg.Aggregates,
		Partitions:       cfg.Partitions,
		SessionTimeout:   6 * time.Second,
		RebalanceTimeout: 6 * time.Second,
		Logger:           cfg.Logger,
		Observer:         cfg.Observer,
		SessionOptions:   cfg.SessionOptions,
	})
	if err != nil {
		return err
	}
	if cfg.Started != nil {
		if err := cfg.Started(p); err != nil {
			return err
		}
	}
	if cfg.Ready != nil {
		go func() {
			select {
			case <-p.Ready():
				cfg.Ready(brokers, redisAddr)
			case <-ctx.Done():
			}
		}()
	}
	return p.Run(ctx)
}
