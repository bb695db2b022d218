package bench

import (
	"fmt"
	"io"
	"strings"
)

// Report writes res for people: each figure, the ratios and what they are
// measured against.
func Report(w io.Writer, res *Result) {
	fmt.Fprintf(w, "broker: %s, GOMAXPROCS %d\n", res.Broker, res.GoMaxProcs)
	fmt.Fprintf(w, "backlog: %d commands over %d orders, %d partitions; commit every %d commands or %gms\n",
		res.Commands, res.Orders, res.Partitions, res.CommitEvery, res.CommitInterval)
	line := func(name string, t *Throughput) {
		fmt.Fprintf(w, "  %-10s %9.0f commands/s  (%.2fs, %d transactions; per command in the process: %.1f allocs, %.0f B",
			name, t.PerSecond, t.Seconds, t.Transactions, t.AllocsPerCommand, t.BytesPerCommand)
		if t.CPUPerCommand > 0 {
			fmt.Fprintf(w, ", %.2fµs CPU", t.CPUPerCommand)
		}
		fmt.Fprintln(w, ")")
	}
	if res.Chronicle != nil || res.Bare != nil {
		fmt.Fprintln(w, "throughput, working off the backlog:")
	}
	if res.Chronicle != nil {
		line("chronicle", res.Chronicle)
	}
	if res.Bare != nil {
		line("bare loop", res.Bare)
	}
	if res.Ratio > 0 {
		fmt.Fprintf(w, "  ratio      %.3f of the bare transactional loop writing the same records\n", res.Ratio)
		if len(res.RoundRatios) > 1 {
			fmt.Fprintf(w, "             the median of %d rounds (%s); the rates above are that round's\n", len(res.RoundRatios), joinf("%.3f", res.RoundRatios))
		}
		fmt.Fprintf(w, "  chronicle allocates %.1f more objects (%.0f B) per command than the bare loop\n", res.AllocsOverBare, res.BytesOverBare)
	}
	if len(res.Latency) > 0 {
		fmt.Fprintln(w, "command→result latency:")
		for _, l := range res.Latency {
			fmt.Fprintf(w, "  at %3g%% of the peak (%6.0f/s asked, %6.0f/s sent, %d commands): p50 %.1fms  p99 %.1fms  p999 %.1fms  max %.1fms",
				l.Share*100, l.Rate, l.Achieved, l.Commands, l.P50, l.P99, l.P999, l.Max)
			if l.Missing > 0 {
				fmt.Fprintf(w, "  (%d results missing)", l.Missing)
			}
			fmt.Fprintln(w)
			if len(l.RoundP99) > 1 {
				fmt.Fprintf(w, "             the round of the median p99 of %d (%s at %s/s)\n", len(l.RoundP99), joinf("%.1fms", l.RoundP99), joinf("%.0f", l.RoundRate))
			}
			if b := l.Bare; b != nil {
				fmt.Fprintf(w, "             bare loop at that share (%6.0f/s sent): p50 %.1fms  p99 %.1fms  p999 %.1fms  max %.1fms",
					b.Achieved, b.P50, b.P99, b.P999, b.Max)
				if b.Missing > 0 {
					fmt.Fprintf(w, "  (%d results missing)", b.Missing)
				}
				fmt.Fprintln(w)
				if len(b.RoundP99) > 1 {
					fmt.Fprintf(w, "             its rounds' p99 (%s); chronicle's p99 is %.2fx the bare loop's\n", joinf("%.1fms", b.RoundP99), l.P99/b.P99)
				}
			}
		}
	}
	if rs := res.Restore; rs != nil {
		fmt.Fprintf(w, "restore of %d events of %d orders:\n", rs.Events, rs.Aggregates)
		fmt.Fprintf(w, "  full replay         %.3fs  (%.0f events/s)\n", rs.FullSeconds, rs.FullEventsPerSecond)
		fmt.Fprintf(w, "  from a checkpoint   %.3fs  (%d events back)  %.1fx faster\n", rs.CheckpointSeconds, rs.Back, rs.Speedup)
		fmt.Fprintf(w, "  deferred loads      %.3fs  (%d aggregates left to load on first use; the checkpoint at stop loaded them all)\n", rs.DeferredSeconds, rs.Deferred)
	}
}

// joinf formats each of vs with format, separated by spaces.
func joinf(format string, vs []float64) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf(format, v)
	}
	return strings.Join(parts, " ")
}
