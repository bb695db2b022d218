package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/twmb/franz-go/pkg/kfake"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/internal/redistest"
	"github.com/chronicle-es/chronicle/snapshots"
)

// tiny is a configuration that runs every phase in seconds.
func tiny() Config {
	return Config{Commands: 600, Orders: 60, Partitions: 3, CommitEvery: 100, CommitInterval: 20 * time.Millisecond,
		LatencyShares: []float64{0.1, 0.5}, LatencyDuration: 200 * time.Millisecond, ReplayEvents: 3000, CheckpointBack: 300}
}

func TestRunMeasuresEveryPhase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := tiny()
	phases := map[string]bool{}
	cfg.Progress = func(p Progress) { phases[strings.Fields(p.Phase)[0]] = true }
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Chronicle == nil || res.Chronicle.Commands != 600 || res.Chronicle.PerSecond <= 0 || res.Chronicle.Transactions < 1 {
		t.Errorf("chronicle: %+v", res.Chronicle)
	}
	if res.Bare == nil || res.Bare.PerSecond <= 0 || res.Bare.Transactions < 6 {
		t.Errorf("bare: %+v", res.Bare)
	}
	if res.Ratio <= 0 || res.Chronicle.AllocsPerCommand <= 0 {
		t.Errorf("ratio %v, allocs %v", res.Ratio, res.Chronicle.AllocsPerCommand)
	}
	// Three rounds by default; the ratio reported is their median, and
	// the rates are that round's.
	if len(res.RoundRatios) != 3 {
		t.Errorf("round ratios %v, want 3", res.RoundRatios)
	} else {
		sorted := slices.Sorted(slices.Values(res.RoundRatios))
		if res.Ratio != sorted[1] || res.Ratio != res.Chronicle.PerSecond/res.Bare.PerSecond {
			t.Errorf("ratio %v of rounds %v (chronicle %v/s, bare %v/s): want the median round's", res.Ratio, res.RoundRatios, res.Chronicle.PerSecond, res.Bare.PerSecond)
		}
	}
	if len(res.Latency) != 2 {
		t.Fatalf("latency: %+v", res.Latency)
	}
	for _, l := range res.Latency {
		if l.Missing != 0 || l.Commands < 1 || l.P50 <= 0 || l.P99 < l.P50 || l.P999 < l.P99 || l.Max < l.P999 {
			t.Errorf("latency: %+v", l)
		}
		// Measured in each of the three rounds; the figures are the
		// median p99's round's.
		if len(l.RoundP99) != 3 {
			t.Errorf("latency at %v: round p99s %v, want 3", l.Share, l.RoundP99)
		} else if sorted := slices.Sorted(slices.Values(l.RoundP99)); l.P99 != sorted[1] {
			t.Errorf("latency at %v: p99 %v of rounds %v, want their median", l.Share, l.P99, l.RoundP99)
		}
		// The bare loop's at the same rate, in each round, every result
		// read: it ends a transaction once it drained its input, or one
		// left open would hold results back past the wait.
		if b := l.Bare; b == nil || b.Missing != 0 || b.P50 <= 0 || b.P99 < b.P50 || b.Share != l.Share || len(b.RoundP99) != 3 {
			t.Errorf("bare loop latency at %v: %+v", l.Share, b)
		} else if sorted := slices.Sorted(slices.Values(b.RoundP99)); b.P99 != sorted[1] {
			t.Errorf("bare loop latency at %v: p99 %v of rounds %v, want their median", l.Share, b.P99, b.RoundP99)
		}
	}
	// The 300 events after the checkpoint touch every one of the 30 orders.
	if rs := res.Restore; rs == nil || rs.Events != 3000 || rs.CheckpointEvents != 300 || rs.FullSeconds <= 0 || rs.CheckpointSeconds <= 0 ||
		rs.Deferred != 30 || rs.DeferredSeconds <= 0 {
		t.Errorf("restore: %+v", res.Restore)
	}
	for _, p := range []string{"backlog", PhaseChronicle, PhaseBare, PhaseLatency, "writing", "full", "checkpoint"} {
		if !phases[p] {
			t.Errorf("no progress reported for phase %q (got %v)", p, phases)
		}
	}
	var out bytes.Buffer
	Report(&out, res)
	for _, want := range []string{"chronicle", "bare loop", "ratio", "p99", "bare loop at that share", "full replay", "from a checkpoint", "deferred loads"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	t.Log("\n" + out.String())
	if _, err := json.Marshal(res); err != nil {
		t.Error(err)
	}
}

func TestConfigErrorsAreAllReported(t *testing.T) {
	cfg := Config{Phases: []string{PhaseLatency, "warp"}, Commands: 5, Orders: 10, LatencyShares: []float64{2}, ReplayEvents: 10, CheckpointBack: 20}
	cfg.setDefaults()
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`unknown phase "warp"`, "needs phase chronicle", "commands 5", "latency share 2", "checkpoint back 20"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// BenchmarkCommandPath runs the processor and the bare loop over a backlog
// of 20,000 order commands on an embedded broker and reports both rates,
// their ratio and the allocations per command. Profile the processor alone
// with -run '^$' -bench 'CommandPath/chronicle' -cpuprofile cpu.out.
func BenchmarkCommandPath(b *testing.B) {
	for _, phases := range [][]string{{PhaseChronicle}, {PhaseBare}, {PhaseChronicle, PhaseBare}} {
		b.Run(strings.Join(phases, "+"), func(b *testing.B) {
			var cmds, secs, ratio, allocs, cpu float64
			for b.Loop() {
				res, err := Run(context.Background(), Config{Phases: phases, Commands: 20_000, Orders: 2_000})
				if err != nil {
					b.Fatal(err)
				}
				t := res.Chronicle
				if t == nil {
					t = res.Bare
				}
				cmds += float64(t.Commands)
				secs += t.Seconds
				allocs += t.AllocsPerCommand
				cpu += t.CPUPerCommand
				ratio += res.Ratio
			}
			b.ReportMetric(cmds/secs, "cmds/s")
			b.ReportMetric(allocs/float64(b.N), "allocs/cmd")
			b.ReportMetric(cpu/float64(b.N), "cpu-µs/cmd")
			if ratio > 0 {
				b.ReportMetric(ratio/float64(b.N), "ratio")
			}
		})
	}
}

// BenchmarkRestore restores 200,000 order events with a full replay and from
// a checkpoint 10,000 events back, with the snapshots in memory and in a
// real redis-server.
func BenchmarkRestore(b *testing.B) {
	for _, name := range []string{"memory", "redis"} {
		b.Run(name, func(b *testing.B) {
			cfg := Config{Phases: []string{PhaseRestore}, ReplayEvents: 200_000, CheckpointBack: 10_000}
			if name == "redis" {
				store, err := snapshots.Open(redistest.Start(b).URL())
				if err != nil {
					b.Fatal(err)
				}
				defer store.Close()
				cfg.Snapshots = store
			}
			var full, fromCP, deferred float64
			for b.Loop() {
				res, err := Run(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				full += res.Restore.FullSeconds
				fromCP += res.Restore.CheckpointSeconds
				deferred += res.Restore.DeferredSeconds
			}
			b.ReportMetric(200_000*float64(b.N)/full, "replay-events/s")
			b.ReportMetric(fromCP*1000/float64(b.N), "checkpoint-ms")
			b.ReportMetric(full/fromCP, "checkpoint-speedup-x")
			b.ReportMetric(deferred*1000/float64(b.N), "deferred-load-ms")
		})
	}
}

// TestMedianLatencyIsTheMiddleRound picks the round of the median p99, and
// ranks a round that lost results above the others.
func TestMedianLatencyIsTheMiddleRound(t *testing.T) {
	for _, tc := range []struct {
		rounds []Latency
		want   float64
	}{
		{[]Latency{{P99: 10, P50: 1, Rate: 100}, {P99: 50, P50: 5, Rate: 500}, {P99: 30, P50: 3, Rate: 300}}, 30},
		{[]Latency{{P99: 10, Missing: 2}, {P99: 50}, {P99: 30}}, 50},
		{[]Latency{{P99: 40}, {P99: 20}}, 20},
		{[]Latency{{P99: 7}}, 7},
	} {
		got := medianLatency(tc.rounds)
		if got.P99 != tc.want || len(got.RoundP99) != len(tc.rounds) {
			t.Errorf("rounds %+v: got %+v, want the round of p99 %v", tc.rounds, got, tc.want)
			continue
		}
		for i, r := range tc.rounds {
			if got.RoundP99[i] != r.P99 || got.RoundRate[i] != r.Rate {
				t.Errorf("rounds %+v: round p99s %v at rates %v, not in round order", tc.rounds, got.RoundP99, got.RoundRate)
			}
		}
		if tc.want == 30 && got.P50 != 3 {
			t.Errorf("the figures are not the median round's: %+v", got)
		}
	}
}

// TestEachRoundGetsABrokerOfItsOwn runs two rounds with a StartBroker that
// starts kfake clusters: each round must get a fresh one, every one must be
// stopped by the end, and each round's ratio is reported.
func TestEachRoundGetsABrokerOfItsOwn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := tiny()
	cfg.Phases, cfg.Rounds, cfg.BrokerName = []string{PhaseBare, PhaseChronicle}, 2, "test clusters"
	var started, stopped atomic.Int32
	cfg.StartBroker = func(context.Context) ([]string, func(), error) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
		if err != nil {
			return nil, nil, err
		}
		started.Add(1)
		return c.ListenAddrs(), func() { c.Close(); stopped.Add(1) }, nil
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if started.Load() != 2 || stopped.Load() != 2 {
		t.Errorf("%d brokers started and %d stopped, want 2 and 2", started.Load(), stopped.Load())
	}
	if len(res.RoundRatios) != 2 || res.Broker != "test clusters" || res.Rounds != 2 {
		t.Errorf("rounds %d, ratios %v, broker %q", res.Rounds, res.RoundRatios, res.Broker)
	}
}

// TestTheServingBareLoopEndsATransactionOnceDrained measures the bare loop's
// latency with a commit interval of an hour: only ending a transaction once
// nothing fetched is left, as the processor does, answers its commands
// before the test's deadline.
func TestTheServingBareLoopEndsATransactionOnceDrained(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := tiny()
	cfg.CommitInterval = time.Hour
	cfg.setDefaults()
	r := &run{cfg: cfg, prefix: "drain-test"}
	if err := r.connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.close()
	samples, err := sampleRecords(64)
	if err != nil {
		t.Fatal(err)
	}
	lats, err := r.bareLatencies(ctx, r.prefix, samples, 1000)
	if err != nil {
		t.Fatalf("the bare loop did not answer within the minute with a commit interval of an hour: %v", err)
	}
	for _, l := range lats {
		if l.Missing != 0 || l.Commands < 1 {
			t.Errorf("bare loop latency at %v: %+v", l.Share, l)
		}
	}
}
