package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/drift"
	"github.com/chronicle-es/chronicle/snapshots"
)

const snapshotsSynopsis = `snapshots verify PREFIX (--all | --sample N | --id ID...) --redis URL [flags]

Compares the snapshots in the Redis store with a full replay of the events
from Kafka, with this program's aggregate types: for each aggregate chosen,
the state its snapshot holds and the state its events give at the
snapshot's version. It prints every difference (the aggregate, the versions
and the JSON fields that differ) and the other problems it finds: snapshots
past the aggregate's last event, gaps in the history, events or snapshots
that cannot be decoded, snapshots of another StateSchema.

Drift means a restore from a checkpoint computes another state than a full
replay: typically an apply function or the state changed without bumping
StateSchema. Run it with the code you are about to deploy, before you
deploy it; bump StateSchema whenever an apply function or the state's shape
changes.

Exit status: 0 when every snapshot checked agrees, 1 when one does not or
the check failed, 2 for a usage error.

Examples:
  {prog} snapshots verify {prefix} --sample 100 --redis redis://127.0.0.1:6379
  {prog} snapshots verify {prefix} --id {id} --redis redis://127.0.0.1:6379
  {prog} snapshots verify {prefix} --all --redis redis://127.0.0.1:6379`

// runSnapshots dispatches the snapshot tools; verify is the only one, so
// its usage is the help of snapshots too.
func runSnapshots(ctx context.Context, args []string, s *session) int {
	switch {
	case len(args) > 0 && args[0] == "verify":
		return runSnapshotsVerify(ctx, args[1:], s)
	case len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help"):
		return runSnapshotsVerify(ctx, []string{"--help"}, s)
	case len(args) > 0:
		fmt.Fprintf(s.err, "%s snapshots: unknown command %q: the snapshot tool is verify\n\n", s.name, args[0])
	}
	runSnapshotsVerify(ctx, []string{"--help"}, s)
	return 2
}

func runSnapshotsVerify(ctx context.Context, args []string, s *session) int {
	fs := newFlags("snapshots verify", snapshotsSynopsis, s)
	var k kafkaFlags
	k.register(fs, "127.0.0.1:9092")
	redisURL := fs.String("redis", "", "Redis URL of the snapshot store the processor writes (as run's --redis; required)")
	all := fs.Bool("all", false, "check every aggregate with events")
	sample := fs.Int("sample", 0, "check this many aggregates chosen at random (default none: or --all, or --id)")
	var ids stringList
	fs.Var(&ids, "id", "check this aggregate (repeat for several)")
	aggs := fs.String("aggregates", s.kinds.defaultSpec(), "topic prefix=aggregate type pairs, to decode the events and snapshots")
	timeout := fs.Duration("timeout", 30*time.Minute, "bound on the whole check")
	pos, code, done := parseFlags(fs, args)
	if done {
		return code
	}
	if len(pos) != 1 || pos[0] == "" {
		fs.Usage()
		return 2
	}
	chosen := 0
	for _, set := range []bool{*all, *sample != 0, len(ids) > 0} {
		if set {
			chosen++
		}
	}
	if chosen != 1 || *sample < 0 {
		fmt.Fprintf(s.err, "%s snapshots verify: choose the aggregates with one of --all, --sample N (N > 0) or --id ID\n", s.name)
		return 2
	}
	if *redisURL == "" {
		fmt.Fprintf(s.err, "%s snapshots verify: --redis is required: the URL of the snapshot store the processor writes (run's --redis)\n", s.name)
		return 2
	}
	if *timeout <= 0 {
		return fail(s, "snapshots verify", fmt.Errorf("--timeout %v: must be positive, e.g. 30m", *timeout))
	}
	prefix, kind, err := s.kinds.resolve(*aggs, pos[0])
	if err != nil {
		return fail(s, "snapshots verify", err)
	}
	opts, err := k.options()
	if err != nil {
		return fail(s, "snapshots verify", err)
	}
	store, err := snapshots.Open(*redisURL)
	if err != nil {
		return fail(s, "snapshots verify", fmt.Errorf("redis %s: %w", redactURL(*redisURL), err))
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := drift.Verify(ctx, drift.Config{Kind: kind, Prefix: prefix, Kafka: client.Kafka{Brokers: k.brokerList(), Options: opts},
		Store: store, IDs: ids, Sample: *sample, All: *all})
	if err != nil {
		return fail(s, "snapshots verify", err)
	}
	printDriftReport(s, prefix, rep)
	if !rep.OK() {
		return 1
	}
	return 0
}

// printDriftReport prints the findings, then a summary line.
func printDriftReport(s *session, prefix string, rep drift.Report) {
	for _, f := range rep.Findings {
		fmt.Fprintln(s.out, f)
	}
	if len(rep.NotFound) > 0 {
		fmt.Fprintf(s.out, "not found (no events and no snapshot on %s): %s\n", prefix, strings.Join(rep.NotFound, ", "))
	}
	fmt.Fprintf(s.out, "%s (%s): %s, %s compared, %d without a snapshot, %d newer than the events read (not checked)\n",
		prefix, rep.Kind, count(rep.Aggregates, "aggregate", "aggregates"), count(rep.Compared, "snapshot", "snapshots"), rep.NoSnapshot, rep.Newer)
	if rep.OK() {
		fmt.Fprintln(s.out, "no drift: every snapshot checked equals a full replay")
		return
	}
	fmt.Fprintf(s.out, "%s with the events. Drift means a restore from a checkpoint computes another state than a full replay: "+
		"bump StateSchema whenever an apply function or the state's shape changes, and the processor ignores the old snapshots.\n",
		count(len(rep.Findings), "snapshot disagrees", "snapshots disagree"))
}

// count is "1 thing" or "n things".
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// stringList is a flag that may be repeated.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	*l = append(*l, v)
	return nil
}
