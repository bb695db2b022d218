package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/chronicle-es/chronicle/bench"
)

const benchSynopsis = `bench [--brokers HOST:PORT] [--json] [flags]

Measures Chronicle against the physical limit of the broker, in one run:
an embedded Kafka (kfake), run as a process of its own and started anew for
each round (--broker-process), unless --brokers is given (then it creates
topics named chronicle-bench-<time>… and deletes them at the end). It uses
the order aggregate of the examples, whatever this program serves.

  throughput  a backlog of --commands order commands over --orders orders in
              --partitions partitions, worked off by a bare franz-go
              transactional loop writing, per command, records like
              Chronicle's (event, state, result; thousands of distinct
              ones, made beforehand), then by the processor, --rounds
              times on fresh topics; the median round's rates and ratio,
              and every round's ratio
  latency     command->result p50/p99/p999 while commands arrive at each of
              --latency-shares of the peak measured in each round; the round
              of the median p99, and every round's p99 and rate; with the bare
              phase, the bare loop's at the same shares first, ending a
              transaction once its input is drained as the processor does
  restore     a full replay of --replay-events events and a restore from a
              checkpoint --checkpoint-back events before their end, until
              each is ready for commands; then how long the first
              checkpoint takes to load the aggregates whose events after
              the checkpoint the restore left for their first use
  allocations and CPU time per command, of the process and beyond the bare loop

Examples:
  {prog} bench
  {prog} bench --commands 20000 --orders 2000 --phases chronicle,bare --json
  {prog} bench --brokers k1:9092 --tls`

func runBench(ctx context.Context, args []string, s *session) int {
	fs := newFlags("bench", benchSynopsis, s)
	var k kafkaFlags
	k.register(fs, "")
	var cfg bench.Config
	fs.IntVar(&cfg.Commands, "commands", 200_000, "commands in the backlog")
	fs.IntVar(&cfg.Orders, "orders", 20_000, "orders the commands address (one CreateOrder each, then AddLines)")
	partitions := fs.Int("partitions", 6, "partitions of the topics")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "times the backlog is worked off by the bare loop and then by Chronicle, on fresh topics; the ratio is the median round's")
	fs.IntVar(&cfg.CommitEvery, "commit-every", 1000, "the processor's --commit-every (and the bare loop's transaction size)")
	fs.DurationVar(&cfg.CommitInterval, "commit-interval", 100*time.Millisecond, "the processor's --commit-interval")
	shares := fs.String("latency-shares", "0.1,0.5", "comma-separated shares of the measured peak at which to measure latency")
	fs.DurationVar(&cfg.LatencyDuration, "latency-duration", 3*time.Second, "how long commands are sent at each share")
	fs.IntVar(&cfg.ReplayEvents, "replay-events", 1_000_000, "events of the restore phase")
	fs.IntVar(&cfg.CheckpointBack, "checkpoint-back", 10_000, "events after the checkpoint the checkpoint restore reads")
	phases := fs.String("phases", "chronicle,bare,latency,restore", "phases to run: chronicle, bare, latency (needs chronicle), restore")
	asJSON := fs.Bool("json", false, "print the result as one JSON document")
	brokerProcess := fs.Bool("broker-process", s.exe != "", "without --brokers: run each round's broker as a process of its own ("+s.name+" dev --broker-only --in-memory), "+
		"so that what the phases write and its garbage collection stay out of the measured process; false runs it inside this process")
	pos, code, done := parseFlags(fs, args)
	if done {
		return code
	}
	if len(pos) > 0 {
		fs.Usage()
		return 2
	}
	cfg.Partitions = int32(*partitions)
	cfg.Phases = strings.Split(*phases, ",")
	cfg.LatencyShares = nil
	for _, f := range strings.Split(*shares, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return fail(s, "bench", fmt.Errorf("--latency-shares %q: %w", *shares, err))
		}
		cfg.LatencyShares = append(cfg.LatencyShares, v)
	}
	if cfg.Brokers = k.brokerList(); len(cfg.Brokers) > 0 {
		opts, err := k.options()
		if err != nil {
			return fail(s, "bench", err)
		}
		cfg.KafkaOptions = opts
	} else if *brokerProcess {
		if s.exe == "" {
			return fail(s, "bench", errors.New("--broker-process: the path of this program is unknown; pass --broker-process=false"))
		}
		cfg.StartBroker = func(ctx context.Context) ([]string, func(), error) { return startBrokerProcess(ctx, s.exe) }
		cfg.BrokerName = "kfake in a process of its own (" + s.name + " dev --broker-only --in-memory), one per round"
	}
	// One progress line per phase, on a terminal only.
	var (
		bar   *progress
		phase string
		shown int64
	)
	cfg.Progress = func(p bench.Progress) {
		if p.Phase != phase {
			bar.Stop()
			bar, phase, shown = startProgress(s.err, p.Phase, p.Total), p.Phase, 0
		}
		bar.Add(p.Done - shown)
		shown = p.Done
	}
	res, err := bench.Run(ctx, cfg)
	bar.Stop()
	if err != nil {
		return fail(s, "bench", err)
	}
	if *asJSON {
		enc := json.NewEncoder(s.out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return fail(s, "bench", err)
		}
		return 0
	}
	bench.Report(s.out, res)
	return 0
}
