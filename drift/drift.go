// Package drift finds snapshots that disagree with their aggregate's
// history: it replays the events topic of an aggregate type from the start
// and compares, aggregate by aggregate, the state each stored snapshot holds
// with the state the replay reaches at the snapshot's version.
//
// # Why snapshots drift
//
// Kafka is the source of truth; a snapshot is a shortcut a processor takes
// when it restores a partition from its last checkpoint. The shortcut is
// only right while the code that wrote the snapshot and the code that reads
// it agree on what the events mean. The classic mistake: an apply function
// changes (a deposit now counts fees, a field is renamed) and the state's
// schema version is not bumped (aggregates.StateSchema). A processor that
// restores from a checkpoint then resumes from states the old code computed,
// while one that replays everything computes new ones, and the two reject or
// accept different commands. Bump StateSchema whenever an apply function or
// the state's shape changes: snapshots of the old schema are then ignored.
//
// Verify catches the mistake before it matters. Run it with the new code
// against the snapshots the old code wrote (or at any time, against a live
// store: snapshots written after the scan began are skipped, not reported).
//
// # What is reported
//
// For each compared aggregate Verify decodes the snapshot as a restore
// would (the stamp must be the running code's, the bytes must decode), and
// replays the aggregate's events from version 0 up to the snapshot's
// version. Both states are encoded the same way (Aggregate.MarshalState, and
// MarshalSnapshot for the window of recent command ids) and compared byte
// for byte; a difference is Drift, with the differing JSON fields. The
// other problems are a snapshot past the aggregate's last event
// (BeyondLog), a history with a gap below the snapshot's version
// (MissingEvents), an event that cannot be decoded or applied
// (UnreadableEvent), a snapshot that cannot be decoded (Undecodable) and a
// snapshot written under another state schema (OtherSchema), which a
// restore ignores but which says old code wrote it.
package drift

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/snapshots"
	"github.com/chronicle-es/chronicle/topics"
)

// Store is what Verify reads from a snapshot store. *snapshots.Redis and
// *snapshots.Memory implement it. Verify only reads: it takes no lease and
// never writes.
type Store interface {
	Load(ctx context.Context, aggType string, partition int32, id string) (snapshots.Snapshot, bool, error)
	LoadMany(ctx context.Context, aggType string, partition int32, ids []string) (map[string]snapshots.Snapshot, error)
}

// Config says which snapshots Verify checks and where their history is.
// Exactly one of IDs, Sample and All selects the aggregates.
type Config struct {
	// Kind is the aggregate type, as the code to be deployed defines it.
	Kind aggregates.Kind
	// Prefix names its topics: the history is "<Prefix>.events".
	Prefix string
	// Kafka reaches the brokers.
	Kafka client.Kafka
	// Store holds the snapshots, as the processor's Config.Snapshots does.
	Store Store

	// IDs checks these aggregates. An id with neither events nor a
	// snapshot is listed in Report.NotFound.
	IDs []string
	// Sample checks this many aggregates chosen at random among those with
	// events (all of them when there are fewer). It reads the events topic
	// twice: once for the ids, once for the chosen aggregates' partitions.
	Sample int
	// All checks every aggregate with events, in one pass over the topic.
	All bool

	// Rand chooses the sample; nil uses a randomly seeded source.
	Rand *rand.Rand
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var problems []error
	if c.Kind == nil {
		problems = append(problems, errors.New("no aggregate type: set Config.Kind"))
	}
	if c.Prefix == "" {
		problems = append(problems, errors.New("empty topic prefix: set Config.Prefix to the prefix the processor serves, e.g. \"orders\""))
	}
	if err := c.Kafka.Validate(); err != nil {
		problems = append(problems, err)
	}
	if c.Store == nil {
		problems = append(problems, errors.New("no snapshot store: set Config.Store to the store the processor writes"))
	}
	if slices.Contains(c.IDs, "") {
		problems = append(problems, errors.New("an empty aggregate id in Config.IDs"))
	}
	if c.Sample < 0 {
		problems = append(problems, fmt.Errorf("sample size %d: must be positive", c.Sample))
	}
	selections := 0
	for _, set := range []bool{len(c.IDs) > 0, c.Sample > 0, c.All} {
		if set {
			selections++
		}
	}
	if selections != 1 {
		problems = append(problems, errors.New("select the aggregates with exactly one of IDs, Sample and All"))
	}
	if len(problems) > 0 {
		return fmt.Errorf("snapshot verification: %w", errors.Join(problems...))
	}
	return nil
}

// Problem names what is wrong with a snapshot.
type Problem string

// The problems Verify reports.
const (
	// Drift: the snapshot's state differs from the replay at its version,
	// so a restore from a checkpoint computes another state than a full
	// replay. Typically an apply function or the state changed without a
	// StateSchema bump.
	Drift Problem = "drift"
	// BeyondLog: the snapshot's version is past the aggregate's last event
	// at offsets the snapshot claims to include (a recreated or truncated
	// events topic, or a store shared by two clusters).
	BeyondLog Problem = "beyond-log"
	// MissingEvents: the aggregate's history has a gap below the
	// snapshot's version (retention deleted events, or they were never
	// written), so the snapshot cannot be checked and a full replay would
	// stop.
	MissingEvents Problem = "missing-events"
	// UnreadableEvent: an event of the aggregate below the snapshot's
	// version cannot be decoded or applied by Kind.
	UnreadableEvent Problem = "unreadable-event"
	// Undecodable: the snapshot cannot be decoded (the store reports it
	// corrupt, or Kind cannot unmarshal it).
	Undecodable Problem = "undecodable-snapshot"
	// OtherSchema: the snapshot carries another state stamp than Kind's
	// (another StateSchema). A restore ignores it; it is not compared.
	OtherSchema Problem = "other-state-schema"
)

// Finding is one snapshot with a problem.
type Finding struct {
	Problem     Problem
	AggregateID string
	Partition   int32
	// SnapshotVersion and SnapshotOffset are the snapshot's version and the
	// events-topic offset of the last event it includes.
	SnapshotVersion int64
	SnapshotOffset  int64
	// ReplayVersion is the version the replay reached: the snapshot's for
	// Drift, the last one it could apply otherwise (-1 for none).
	ReplayVersion int64
	// Snapshot and Replayed are, for Drift, both states encoded with
	// MarshalState.
	Snapshot, Replayed []byte
	// Diff lists, for Drift, the JSON fields that differ, one per line:
	// "state.balance: snapshot 77, replay 79".
	Diff []string
	// Detail says more, in words.
	Detail string
}

// String describes the finding in one paragraph.
func (f Finding) String() string {
	var b strings.Builder
	switch {
	case f.AggregateID == "":
		fmt.Fprintf(&b, "%s: a record of partition %d", f.Problem, f.Partition)
	case f.Problem == Undecodable && f.SnapshotVersion < 0: // the store could not read it
		fmt.Fprintf(&b, "%s: aggregate %q (partition %d): its snapshot", f.Problem, f.AggregateID, f.Partition)
	default:
		fmt.Fprintf(&b, "%s: aggregate %q (partition %d): snapshot at version %d (offset %d)", f.Problem, f.AggregateID, f.Partition, f.SnapshotVersion, f.SnapshotOffset)
	}
	switch f.Problem {
	case Drift:
		fmt.Fprintf(&b, " differs from the replay at version %d", f.ReplayVersion)
	case BeyondLog, MissingEvents:
		fmt.Fprintf(&b, ", replay reached version %d", f.ReplayVersion)
	}
	if f.Detail != "" {
		b.WriteString(": " + f.Detail)
	}
	for _, d := range f.Diff {
		b.WriteString("\n    " + d)
	}
	return b.String()
}

// Report is what Verify found.
type Report struct {
	// Kind is the state stamp compared against, e.g. "account/v1".
	Kind string
	// Aggregates counts the aggregates looked at; Compared those whose
	// snapshot was replayed and compared (with or without drift);
	// NoSnapshot those with events but no snapshot (nothing to check);
	// Newer the snapshots that include events written after the scan
	// began (not checked: run Verify again).
	Aggregates, Compared, NoSnapshot, Newer int
	// NotFound lists the ids of Config.IDs with neither events nor a
	// snapshot: a typo, or another prefix.
	NotFound []string
	// Findings are the snapshots with a problem, by aggregate id.
	Findings []Finding
}

// OK reports whether no snapshot has a problem.
func (r Report) OK() bool { return len(r.Findings) == 0 }

// Verify compares the stored snapshots of the selected aggregates with a
// full replay of their events from Kafka and reports every difference. Its
// error is for what kept it from checking (Kafka or the store unreachable,
// a missing topic, bad configuration), never for a problem it found.
//
// The events topic is read with read_committed up to each partition's last
// stable offset at the start; a snapshot that includes later events is
// counted in Report.Newer and not checked. Memory holds, for each snapshot
// whose version the replay has not reached yet, the decoded snapshot and the
// replayed aggregate, never the events themselves.
func Verify(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	cfg.IDs = slices.Compact(slices.Sorted(slices.Values(cfg.IDs)))
	v := &verifier{cfg: cfg, tracked: map[string]*tracked{}, report: Report{Kind: cfg.Kind.StateStamp()}}
	ids := cfg.IDs
	if cfg.Sample > 0 {
		var err error
		if ids, err = v.sample(ctx); err != nil {
			return Report{}, err
		}
		if len(ids) == 0 {
			return v.report, nil
		}
	}
	scanned, err := client.ScanEvents(ctx, cfg.Kafka, client.EventScan{Prefix: cfg.Prefix, AggregateIDs: ids}, func(recs []client.EventRecord) error {
		return v.batch(ctx, recs)
	})
	if err != nil {
		return Report{}, fmt.Errorf("verifying snapshots of %s: %w", cfg.Kind.Name(), err)
	}
	v.ends = scanned.End
	if len(cfg.IDs) > 0 { // ids without events: their snapshots, if any
		owner := topics.NewOwner()
		byPart := map[int32][]string{}
		for _, id := range cfg.IDs {
			if v.tracked[id] == nil {
				p := owner.Of([]byte(id), scanned.Partitions)
				byPart[p] = append(byPart[p], id)
			}
		}
		for p, ids := range byPart {
			if err := v.track(ctx, p, ids); err != nil {
				return Report{}, err
			}
		}
		for _, id := range cfg.IDs {
			if t := v.tracked[id]; t != nil && !t.events && !t.hasSnap {
				v.report.NotFound = append(v.report.NotFound, id)
			}
		}
	}
	v.finish()
	slices.SortFunc(v.report.Findings, func(a, b Finding) int { return strings.Compare(a.AggregateID, b.AggregateID) })
	return v.report, nil
}

// verifier is the state of one Verify call.
type verifier struct {
	cfg     Config
	ends    map[int32]int64
	tracked map[string]*tracked
	report  Report
}

// tracked is one aggregate being verified.
type tracked struct {
	partition int32
	events    bool // the scan handed out one of its events
	hasSnap   bool
	snap      snapshots.Snapshot
	stored    aggregates.Aggregate // the snapshot, decoded; nil once done
	replay    aggregates.Aggregate
}

// done reports whether nothing is left to do for the aggregate.
func (t *tracked) done() bool { return t.stored == nil }

// sample reads the ids of the aggregates with events and returns
// cfg.Sample of them at random.
func (v *verifier) sample(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var ids []string
	_, err := client.ScanEvents(ctx, v.cfg.Kafka, client.EventScan{Prefix: v.cfg.Prefix}, func(recs []client.EventRecord) error {
		for _, r := range recs {
			if id := r.AggregateID; id != "" && !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the aggregates of %s to sample: %w", v.cfg.Kind.Name(), err)
	}
	shuffle := rand.Shuffle
	if v.cfg.Rand != nil {
		shuffle = v.cfg.Rand.Shuffle
	}
	shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	return ids[:min(len(ids), v.cfg.Sample)], nil
}

// batch replays one batch of records: it loads the snapshots of the
// aggregates seen for the first time, then applies the events.
func (v *verifier) batch(ctx context.Context, recs []client.EventRecord) error {
	newIDs := map[int32][]string{}
	for _, r := range recs {
		if r.AggregateID != "" && v.tracked[r.AggregateID] == nil && !slices.Contains(newIDs[r.Partition], r.AggregateID) {
			newIDs[r.Partition] = append(newIDs[r.Partition], r.AggregateID)
		}
	}
	for p, ids := range newIDs {
		if err := v.track(ctx, p, ids); err != nil {
			return err
		}
	}
	for _, r := range recs {
		if r.AggregateID == "" {
			v.foreign(r)
			continue
		}
		t := v.tracked[r.AggregateID]
		t.events = true
		if !t.done() {
			v.apply(r, t)
		}
	}
	return nil
}

// foreign reports a record whose key is not an event key: it belongs to no
// aggregate the scan can name.
func (v *verifier) foreign(r client.EventRecord) {
	v.report.Findings = append(v.report.Findings, Finding{Problem: UnreadableEvent, Partition: r.Partition, SnapshotVersion: -1, ReplayVersion: -1,
		Detail: fmt.Sprintf("the record at offset %d has no event key (\"<id>@<version>\"): something other than a processor wrote to %s", r.Offset, topics.For(v.cfg.Prefix).Events)})
}

// track loads the snapshots of ids (all of partition p) and starts
// tracking them.
func (v *verifier) track(ctx context.Context, p int32, ids []string) error {
	snaps, err := v.cfg.Store.LoadMany(ctx, v.cfg.Kind.Name(), p, ids)
	corrupt := map[string]error{}
	if errors.Is(err, snapshots.ErrCorrupt) { // find which: one at a time
		snaps, err = map[string]snapshots.Snapshot{}, nil
		for _, id := range ids {
			s, ok, lerr := v.cfg.Store.Load(ctx, v.cfg.Kind.Name(), p, id)
			switch {
			case errors.Is(lerr, snapshots.ErrCorrupt):
				corrupt[id] = lerr
			case lerr != nil:
				err = lerr
			case ok:
				snaps[id] = s
			}
		}
	}
	if err != nil {
		return fmt.Errorf("loading snapshots of %s partition %d: %w", v.cfg.Kind.Name(), p, err)
	}
	for _, id := range ids {
		t := &tracked{partition: p}
		v.tracked[id] = t
		v.report.Aggregates++
		if cerr, bad := corrupt[id]; bad {
			t.hasSnap = true
			v.report.Findings = append(v.report.Findings, Finding{Problem: Undecodable, AggregateID: id, Partition: p, SnapshotVersion: -1, ReplayVersion: -1, Detail: cerr.Error()})
			continue
		}
		s, ok := snaps[id]
		if !ok {
			continue
		}
		t.hasSnap, t.snap = true, s
		v.start(t, id)
	}
	return nil
}

// start decodes a loaded snapshot as a restore would and prepares its
// replay.
func (v *verifier) start(t *tracked, id string) {
	s := t.snap
	f := Finding{AggregateID: id, Partition: t.partition, SnapshotVersion: s.Version, SnapshotOffset: s.Offset, ReplayVersion: -1}
	if want := v.cfg.Kind.StateStamp(); s.Stamp != want {
		f.Problem, f.Detail = OtherSchema, fmt.Sprintf("its stamp is %q, the code verifying writes %q; a restore ignores it and replays", s.Stamp, want)
		v.report.Findings = append(v.report.Findings, f)
		return
	}
	stored := v.cfg.Kind.NewAggregate(id)
	if err := stored.UnmarshalSnapshot(s.Data); err != nil {
		f.Problem, f.Detail = Undecodable, err.Error()
		v.report.Findings = append(v.report.Findings, f)
		return
	}
	t.stored, t.replay = stored, v.cfg.Kind.NewAggregate(id)
	if stored.Version() != s.Version {
		f.Problem, f.Detail = Undecodable, fmt.Sprintf("the store says version %d, the snapshot's bytes say %d", s.Version, stored.Version())
		v.report.Findings = append(v.report.Findings, f)
		t.stored = nil
		return
	}
	if s.Version < 0 {
		v.compare(t)
	}
}

// apply replays one event of a tracked aggregate, and compares once the
// snapshot's version is reached.
func (v *verifier) apply(r client.EventRecord, t *tracked) {
	f := Finding{AggregateID: r.AggregateID, Partition: t.partition, SnapshotVersion: t.snap.Version, SnapshotOffset: t.snap.Offset, ReplayVersion: t.replay.Version()}
	fail := func(p Problem, detail string) {
		f.Problem, f.Detail = p, detail
		v.report.Findings = append(v.report.Findings, f)
		t.stored = nil
	}
	e, err := v.cfg.Kind.DecodeEvent(r.Value)
	switch {
	case err != nil:
		fail(UnreadableEvent, fmt.Sprintf("the event at offset %d: %v", r.Offset, err))
		return
	case e.Subject != r.AggregateID:
		fail(UnreadableEvent, fmt.Sprintf("the event at offset %d is keyed %q but its subject is %q: the events topic is corrupt", r.Offset, r.AggregateID, e.Subject))
		return
	case e.Version <= t.replay.Version():
		return // a second copy: a restore keeps the first
	}
	if err := t.replay.Apply(&e); err != nil && !errors.Is(err, aggregates.ErrInvariantViolated) {
		var gap *aggregates.VersionGapError
		if errors.As(err, &gap) {
			fail(MissingEvents, fmt.Sprintf("the next event in the log is version %d (offset %d), version %d is missing", e.Version, r.Offset, t.replay.Version()+1))
			return
		}
		fail(UnreadableEvent, fmt.Sprintf("applying the event at offset %d: %v", r.Offset, err))
		return
	}
	if t.replay.Version() == t.snap.Version {
		v.compare(t)
	}
}

// compare checks a snapshot against its replay, both at its version.
func (v *verifier) compare(t *tracked) {
	v.report.Compared++
	defer func() { t.stored = nil }()
	f := Finding{Problem: Drift, AggregateID: t.stored.ID(), Partition: t.partition, SnapshotVersion: t.snap.Version, SnapshotOffset: t.snap.Offset, ReplayVersion: t.replay.Version()}
	stored, err1 := t.stored.MarshalState()
	replayed, err2 := t.replay.MarshalState()
	if err := errors.Join(err1, err2); err != nil {
		f.Detail = fmt.Sprintf("encoding the states to compare them: %v", err)
		v.report.Findings = append(v.report.Findings, f)
		return
	}
	if !bytes.Equal(stored, replayed) {
		f.Snapshot, f.Replayed, f.Diff = stored, replayed, jsonDiff(stored, replayed)
		v.report.Findings = append(v.report.Findings, f)
		return
	}
	ss, err1 := t.stored.MarshalSnapshot()
	rs, err2 := t.replay.MarshalSnapshot()
	if err := errors.Join(err1, err2); err != nil || !bytes.Equal(ss, rs) {
		f.Snapshot, f.Replayed = ss, rs
		f.Detail = "the states agree but the recent command ids (duplicate detection) differ"
		if err != nil {
			f.Detail = fmt.Sprintf("encoding the snapshots to compare them: %v", err)
		}
		v.report.Findings = append(v.report.Findings, f)
	}
}

// finish counts the aggregates without a snapshot and reports the
// snapshots whose version the replay never reached.
func (v *verifier) finish() {
	for id, t := range v.tracked {
		if t.events && !t.hasSnap {
			v.report.NoSnapshot++
		}
		s := t.snap
		if t.done() {
			continue
		}
		t.stored = nil
		if s.Offset >= v.ends[t.partition] {
			v.report.Newer++ // written after the scan began
			continue
		}
		last := t.replay.Version()
		detail := fmt.Sprintf("the log's last event of the aggregate is version %d", last)
		if last < 0 {
			detail = "the log has no event of the aggregate"
		}
		v.report.Findings = append(v.report.Findings, Finding{Problem: BeyondLog, AggregateID: id, Partition: t.partition,
			SnapshotVersion: s.Version, SnapshotOffset: s.Offset, ReplayVersion: last,
			Detail: detail + fmt.Sprintf(" below offset %d: was the events topic recreated, or is the store shared with another cluster?", v.ends[t.partition])})
	}
}
