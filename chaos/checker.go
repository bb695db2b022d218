// Package chaos checks what Chronicle wrote to Kafka against a reference
// model, as a black box: the chaos test (chaos_test.go) runs the chronicle
// binary as separate processes under faults, reads every topic back with
// read_committed, and hands the records to Check, which reports every
// violation of Chronicle's promises by kind.
//
// # The order the reference model uses
//
// An aggregate's commands are decided in the offset order of its owner
// partition of the commands topic (murmur2(aggregate id) mod N), and only
// there. A well-formed command that arrives on another partition is not
// decided there: the processor appends a copy to the owner partition (with
// the header chronicle-forwarded-from naming the original) in the same
// transaction, and the copy is decided when the owner partition reaches it.
// So the model replays, per owner partition in offset order, the records
// that are decided there: those written there directly and the forwarded
// copies at the offsets they were appended at, never the originals on the
// wrong partitions. A command forwarded later can thus be decided after
// commands its producer sent after it; the log, not the send order, is the
// truth. Records that cannot be decoded, or whose key is not their
// aggregate_id, are answered where they land (an invalid result when their
// id can be read, and a DLQ record), whichever partition that is.
//
// Results are keyed by command id. A command id sent n times is decided n
// times, in its owner partition's order, and its n results appear in that
// order in its results partition; the checker pairs them in that order.
//
// # Running the chaos test
//
//	CHRONICLE_CHAOS=1 go test -run TestChaos -v ./chaos/                      # short: 30k records, about 80 s
//	CHRONICLE_CHAOS_LONG=1 go test -run TestChaos -v -timeout 30m ./chaos/    # long: 120k records, faults 4 times
//
// CHRONICLE_CHAOS_SEED fixes the workload, CHRONICLE_CHAOS_DIR keeps the
// processes' logs and the report (report.txt) in a directory of your
// choice, and CHRONICLE_CHAOS_FAULTS chooses the faults: all (default),
// none (a calm run, which must show no violation), or a list of kill, term,
// flush, maxmemory, redis-down and broker. It needs Linux and redis-server.
package chaos

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
)

// Header names the processor writes, as documented in docs/formats.md.
const (
	HeaderForwardedFrom = "chronicle-forwarded-from"
	HeaderSourceTopic   = "chronicle-source-topic"
	HeaderSourcePart    = "chronicle-source-partition"
	HeaderSourceOffset  = "chronicle-source-offset"
)

// Kind is one kind of violation. One fault can show as several kinds: a
// command decided twice may write an event key twice, break its
// aggregate's version sequence, and make later results differ.
type Kind string

// The kinds of violation Check counts.
const (
	// MissingResult: a command record with a readable id has fewer
	// results than times it was decided (or answered as invalid).
	MissingResult Kind = "missing_result"
	// ExtraResult: a command id has more results than records, or a
	// result names a command nobody sent.
	ExtraResult Kind = "extra_result"
	// WrongOutcome: a result's status, version or code differs from the
	// reference model's.
	WrongOutcome Kind = "wrong_outcome"
	// UnreadableRecord: an event, state or result record that does not
	// decode.
	UnreadableRecord Kind = "unreadable_record"
	// MisplacedEvent: an event whose key, subject, version or partition
	// disagree (key id@version, subject id, owner partition of id).
	MisplacedEvent Kind = "misplaced_event"
	// DuplicateEventKey: an event key id@version written more than once
	// (counted per extra copy).
	DuplicateEventKey Kind = "duplicate_event_key"
	// VersionSequence: an aggregate whose events, in offset order, are not
	// versions 0, 1, …, n (counted per aggregate).
	VersionSequence Kind = "version_sequence"
	// CommandAppliedTwice: a command id that caused events in more than one
	// decision (its events differ in aggregate or time stamp, or are not
	// consecutive versions).
	CommandAppliedTwice Kind = "command_applied_twice"
	// HistoryMismatch: an aggregate whose events differ from the events
	// the reference model predicts (counted per aggregate).
	HistoryMismatch Kind = "history_mismatch"
	// StateMismatch: an aggregate whose last state record is not the
	// replay of its events, or is missing, or exists without events.
	StateMismatch Kind = "state_mismatch"
	// DLQMissing: a record that must be dead-lettered (undecodable, key
	// mismatch, or invalid when decided) is not in the DLQ.
	DLQMissing Kind = "dlq_missing"
	// DLQExtra: a DLQ record that is not one of those, is there twice, or
	// does not carry the original bytes.
	DLQExtra Kind = "dlq_extra"
	// ForwardMissing: a well-formed command on a wrong partition has no
	// forwarded copy on its owner partition.
	ForwardMissing Kind = "forward_missing"
	// ForwardExtra: a forwarded copy of a record that must not be
	// forwarded, a second copy, or a copy on the wrong partition or with
	// other bytes.
	ForwardExtra Kind = "forward_extra"
	// Stall: a partition's results waited longer than Options.StallBound
	// outside the faults' spans (counted per fault and partition).
	Stall Kind = "stall"
)

// Kinds lists every kind, in report order.
var Kinds = []Kind{MissingResult, ExtraResult, WrongOutcome, UnreadableRecord, MisplacedEvent,
	DuplicateEventKey, VersionSequence, CommandAppliedTwice, HistoryMismatch, StateMismatch,
	DLQMissing, DLQExtra, ForwardMissing, ForwardExtra, Stall}

// Record is one Kafka record as read back with read_committed.
type Record struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   map[string]string
	// Timestamp is the record's create time (set by its producer).
	Timestamp time.Time
}

// History is everything one aggregate type's topics hold after a run.
type History struct {
	// CommandsTopic is the commands topic's name, as DLQ and forwarding
	// headers name it (e.g. "orders.commands").
	CommandsTopic string
	// Partitions is the partition count of the (co-partitioned) commands,
	// events and state topics.
	Partitions int32
	// The records of each topic. Their order does not matter: Check sorts
	// them by partition and offset.
	Commands, Events, State, Results, DLQ []Record
}

// Fault is one fault injected during the run.
type Fault struct {
	Name string
	// Start is when it began and End when it was over (the process
	// restarted, Redis answering writes again…); equal for an instant one.
	Start, End time.Time
}

// Options tune Check.
type Options struct {
	// Faults injected during the run, for the progress check.
	Faults []Fault
	// StallBound is how long a command may wait for its result, not
	// counting the time faults were in progress (from a Fault's Start to
	// its End: a process killed until its replacement started, Redis
	// down…). Zero skips the progress check.
	StallBound time.Duration
}

// Report is the outcome of Check.
type Report struct {
	// Counts holds the number of violations of each kind (zero kinds too).
	Counts map[Kind]int
	// Examples holds the first few violations of each kind, readably.
	Examples map[Kind][]string
	// Stats describes the run: what the log held and what the model
	// predicted.
	Stats Stats
	// Recovery is, per fault, how long results waited (outside faults)
	// in the period it began: the commands produced from its start until
	// the next fault began.
	Recovery []Recovery
}

// Recovery is how long results waited after one fault.
type Recovery struct {
	Fault    Fault
	Results  int           // results of commands produced in the fault's period
	MaxDelay time.Duration // the longest any of them waited
}

// Stats describes a checked history.
type Stats struct {
	CommandRecords int            // records of the commands topic
	Decided        int            // of them decided by an aggregate (direct or forwarded copies)
	Forwarded      int            // well-formed records on a wrong partition
	Bad            int            // undecodable or mis-keyed records
	Predicted      map[string]int // predicted results by status
	Codes          map[string]int // predicted rejected and invalid results by code
	Results        int
	Events         int
	Aggregates     int // aggregates with events
	StateRecords   int
	DLQ            int
}

// Total is the number of violations of every kind.
func (r *Report) Total() int {
	n := 0
	for _, c := range r.Counts {
		n += c
	}
	return n
}

// String prints the counts, the examples and the stats.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "violations: %d\n", r.Total())
	for _, k := range Kinds {
		fmt.Fprintf(&b, "  %-22s %d\n", k, r.Counts[k])
	}
	for _, k := range Kinds {
		for _, ex := range r.Examples[k] {
			fmt.Fprintf(&b, "  e.g. %s: %s\n", k, ex)
		}
	}
	s := r.Stats
	fmt.Fprintf(&b, "log: %d command records (%d decided, %d forwarded, %d bad), %d results, %d events of %d aggregates, %d state records, %d DLQ records\n",
		s.CommandRecords, s.Decided, s.Forwarded, s.Bad, s.Results, s.Events, s.Aggregates, s.StateRecords, s.DLQ)
	fmt.Fprintf(&b, "predicted: %s; codes: %s\n", formatCounts(s.Predicted), formatCounts(s.Codes))
	for _, rc := range r.Recovery {
		fmt.Fprintf(&b, "after %-28s %5d results, the longest wait %v\n", rc.Fault.Name+":", rc.Results, rc.MaxDelay.Round(10*time.Millisecond))
	}
	return b.String()
}

func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

const maxExamples = 5

func (r *Report) add(k Kind, n int, format string, args ...any) {
	if n <= 0 {
		return
	}
	r.Counts[k] += n
	if len(r.Examples[k]) < maxExamples {
		r.Examples[k] = append(r.Examples[k], fmt.Sprintf(format, args...))
	}
}

// pos is a record's place in its topic.
type pos struct {
	p int32
	o int64
}

func (p pos) String() string { return fmt.Sprintf("%d/%d", p.p, p.o) }

func posOf(r *Record) pos { return pos{r.Partition, r.Offset} }

// expectation is one result a command record must get.
type expectation struct {
	at     pos
	rec    *Record
	origin *Record // the record as its producer wrote it (the original of a forwarded copy)
	id     string
	want   outcome
}

// classified is a commands topic sorted into what the processor must do
// with each record.
type classified struct {
	byPos map[pos]*Record
	// decided lists the records an aggregate decides, by owner partition
	// then offset, with their decoded commands.
	decided []decidedCommand
	// bad are undecodable or mis-keyed records: each must be in the DLQ,
	// and get an invalid result at version -1 when its id can be read.
	bad []badRecord
	// forwards lists the wrongly partitioned well-formed records.
	forwards []*Record
	// copies maps a forwarded-from header to the records carrying it.
	copies map[string][]*Record
}

type decidedCommand struct {
	rec    *Record
	origin *Record
	cmd    aggregates.Command
}

type badRecord struct {
	rec  *Record
	id   string // "" when it cannot be read
	code string
}

// owner returns murmur2(key) mod n, Kafka's default partitioner.
func owner(key []byte, n int32) int32 {
	return int32(ownerPartitioner.Partition(&kgo.Record{Key: key}, int(n)))
}

var ownerPartitioner = kgo.StickyKeyPartitioner(nil).ForTopic("")

func sortRecords(rs []Record) []*Record {
	out := make([]*Record, len(rs))
	for i := range rs {
		out[i] = &rs[i]
	}
	slices.SortStableFunc(out, func(a, b *Record) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	return out
}

func forwardRef(topic string, r *Record) string {
	return topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10)
}

func classify(h *History) *classified {
	c := &classified{byPos: map[pos]*Record{}, copies: map[string][]*Record{}}
	cmds := sortRecords(h.Commands)
	for _, r := range cmds {
		c.byPos[posOf(r)] = r
	}
	for _, r := range cmds {
		origin := r
		if from, ok := r.Headers[HeaderForwardedFrom]; ok {
			c.copies[from] = append(c.copies[from], r)
			if o := c.lookupRef(h.CommandsTopic, from); o != nil {
				origin = o
			}
		}
		cmd, err := aggregates.DecodeCommand(r.Value)
		id := ""
		if cmd.ID != (ulid.ULID{}) {
			id = cmd.ID.String()
		}
		switch {
		case err != nil:
			c.bad = append(c.bad, badRecord{rec: r, id: id, code: aggregates.CodeMalformed})
		case string(r.Key) != cmd.AggregateID:
			c.bad = append(c.bad, badRecord{rec: r, id: id, code: aggregates.CodeKeyMismatch})
		case owner(r.Key, h.Partitions) != r.Partition:
			c.forwards = append(c.forwards, r)
		default:
			c.decided = append(c.decided, decidedCommand{rec: r, origin: origin, cmd: cmd})
		}
	}
	return c
}

// lookupRef finds the record a forwarded-from header names.
func (c *classified) lookupRef(topic, ref string) *Record {
	rest, ok := strings.CutPrefix(ref, topic+"/")
	if !ok {
		return nil
	}
	ps, os, ok := strings.Cut(rest, "/")
	if !ok {
		return nil
	}
	p, err1 := strconv.ParseInt(ps, 10, 32)
	o, err2 := strconv.ParseInt(os, 10, 64)
	if err1 != nil || err2 != nil {
		return nil
	}
	return c.byPos[pos{int32(p), o}]
}

// Pending returns how many results and forwarded copies the history still
// lacks: a run has drained when it is zero. It is cheaper than Check (no
// model) and meant to be polled while the processors work.
func Pending(h History) int {
	c := classify(&h)
	want := map[string]int{}
	for _, d := range c.decided {
		want[d.cmd.ID.String()]++
	}
	for _, b := range c.bad {
		if b.id != "" {
			want[b.id]++
		}
	}
	for _, r := range h.Results {
		var res struct {
			CommandID string `json:"command_id"`
		}
		if json.Unmarshal(r.Value, &res) == nil {
			want[res.CommandID]--
		}
	}
	n := 0
	for _, w := range want {
		n += max(w, 0)
	}
	for _, f := range c.forwards {
		if len(c.copies[forwardRef(h.CommandsTopic, f)]) == 0 {
			n++
		}
	}
	return n
}

// Check verifies a history against the reference model and reports every
// violation by kind.
func Check(h History, opts Options) Report {
	rep := Report{Counts: map[Kind]int{}, Examples: map[Kind][]string{}}
	for _, k := range Kinds {
		rep.Counts[k] = 0
	}
	st := &rep.Stats
	st.Predicted, st.Codes = map[string]int{}, map[string]int{}
	c := classify(&h)
	st.CommandRecords, st.Decided, st.Forwarded, st.Bad = len(h.Commands), len(c.decided), len(c.forwards), len(c.bad)

	checkForwards(&h, c, &rep)

	// The model, per owner partition in offset order (c.decided is sorted
	// so), one aggregate at a time.
	models := map[string]*model{}
	wantEvents := map[string][]modelEvent{}
	wantDLQ := map[pos]*Record{}
	byID := map[string][]*expectation{}
	for _, d := range c.decided {
		id := d.cmd.AggregateID
		m := models[id]
		if m == nil {
			m = newModel()
			models[id] = m
		}
		first := m.version + 1
		out := m.decide(&d.cmd)
		for i, e := range out.Events {
			wantEvents[id] = append(wantEvents[id], modelEvent{version: first + int64(i), e: e, causation: d.cmd.ID.String()})
		}
		if out.Status == statusInvalid {
			wantDLQ[posOf(d.rec)] = d.rec
		}
		cid := d.cmd.ID.String()
		byID[cid] = append(byID[cid], &expectation{at: posOf(d.rec), rec: d.rec, origin: d.origin, id: cid, want: out})
	}
	for _, b := range c.bad {
		wantDLQ[posOf(b.rec)] = b.rec
		if b.id != "" {
			byID[b.id] = append(byID[b.id], &expectation{at: posOf(b.rec), rec: b.rec, origin: b.rec, id: b.id,
				want: outcome{Status: statusInvalid, Version: -1, Code: b.code}})
		}
	}
	for _, list := range byID {
		slices.SortStableFunc(list, func(a, b *expectation) int {
			return cmp.Or(cmp.Compare(a.at.p, b.at.p), cmp.Compare(a.at.o, b.at.o))
		})
		for _, e := range list {
			st.Predicted[e.want.Status]++
			if e.want.Code != "" {
				st.Codes[e.want.Code]++
			}
		}
	}

	matched := checkResults(&h, byID, &rep)
	if opts.StallBound > 0 {
		checkProgress(matched, opts, &rep)
	}
	events := checkEvents(&h, wantEvents, &rep)
	checkState(&h, events, &rep)
	checkDLQ(&h, wantDLQ, &rep)
	return rep
}

func checkForwards(h *History, c *classified, rep *Report) {
	expected := map[string]*Record{}
	for _, f := range c.forwards {
		expected[forwardRef(h.CommandsTopic, f)] = f
	}
	refs := make([]string, 0, len(c.copies))
	for ref := range c.copies {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	for _, ref := range refs {
		copies := c.copies[ref]
		orig := expected[ref]
		if orig == nil {
			rep.add(ForwardExtra, len(copies), "%d cop(ies) forwarded from %s, which is not a well-formed record on a wrong partition", len(copies), ref)
			continue
		}
		rep.add(ForwardExtra, len(copies)-1, "%s was forwarded %d times", ref, len(copies))
		for _, cp := range copies {
			if cp.Partition != owner(orig.Key, h.Partitions) || string(cp.Key) != string(orig.Key) || string(cp.Value) != string(orig.Value) {
				rep.add(ForwardExtra, 1, "the copy of %s at %s is not on the owner partition %d or differs from the original",
					ref, posOf(cp), owner(orig.Key, h.Partitions))
			}
		}
	}
	for _, f := range c.forwards {
		ref := forwardRef(h.CommandsTopic, f)
		if len(c.copies[ref]) == 0 {
			rep.add(ForwardMissing, 1, "%s (key %q) on a wrong partition has no copy on its owner partition %d", ref, f.Key, owner(f.Key, h.Partitions))
		}
	}
}

// resultDoc is the part of a result the checker reads.
type resultDoc struct {
	CommandID   string `json:"command_id"`
	AggregateID string `json:"aggregate_id"`
	Status      string `json:"status"`
	Version     int64  `json:"version"`
	Code        string `json:"code"`
}

// match is one result paired with the record it answers.
type match struct {
	exp *expectation
	res *Record
}

func checkResults(h *History, byID map[string][]*expectation, rep *Report) []match {
	got := map[string][]*Record{}
	docs := map[*Record]resultDoc{}
	var order []string
	for _, r := range sortRecords(h.Results) {
		var d resultDoc
		if err := json.Unmarshal(r.Value, &d); err != nil || d.CommandID == "" {
			rep.add(UnreadableRecord, 1, "result at %s does not decode: %v", posOf(r), err)
			continue
		}
		rep.Stats.Results++
		docs[r] = d
		if _, ok := got[d.CommandID]; !ok {
			order = append(order, d.CommandID)
		}
		got[d.CommandID] = append(got[d.CommandID], r)
	}
	var matched []match
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		want, have := byID[id], got[id]
		for i, e := range want {
			if i >= len(have) {
				rep.add(MissingResult, len(want)-i, "command %s at %s (%s) has %d result(s) for %d record(s); the first missing one should be %s",
					id, e.at, e.origin.Key, len(have), len(want), e.want)
				break
			}
			d := docs[have[i]]
			if d.Status != e.want.Status || d.Version != e.want.Version || d.Code != e.want.Code {
				rep.add(WrongOutcome, 1, "command %s at %s for %q: result %d says %s, the model says %s",
					id, e.at, e.origin.Key, i+1, outcome{Status: d.Status, Version: d.Version, Code: d.Code}, e.want)
			}
			matched = append(matched, match{exp: e, res: have[i]})
		}
		if len(have) > len(want) {
			rep.add(ExtraResult, len(have)-len(want), "command %s has %d results for %d record(s)", id, len(have), len(want))
		}
	}
	for _, id := range order {
		if _, ok := byID[id]; !ok {
			rep.add(ExtraResult, len(got[id]), "%d result(s) for command %s, which no command record carries", len(got[id]), id)
		}
	}
	return matched
}

// checkProgress finds results that waited longer than the bound, not
// counting the time faults were in progress.
func checkProgress(matched []match, opts Options, rep *Report) {
	faults := slices.Clone(opts.Faults)
	slices.SortStableFunc(faults, func(a, b Fault) int { return a.Start.Compare(b.Start) })
	rec := make([]Recovery, len(faults))
	for i := range faults {
		rec[i].Fault = faults[i]
	}
	windows := mergeWindows(faults)
	type stallKey struct {
		fault     int // -1: no fault
		partition int32
	}
	type stallInfo struct {
		n     int
		worst time.Duration
		id    string
	}
	stalls := map[stallKey]*stallInfo{}
	for _, m := range matched {
		produced, answered := m.exp.origin.Timestamp, m.res.Timestamp
		wait := waitOutside(windows, produced, answered)
		// A result belongs to the period of the last fault that began
		// before its command was produced.
		if at := lastStartedBy(faults, produced); at >= 0 {
			rec[at].Results++
			rec[at].MaxDelay = max(rec[at].MaxDelay, wait)
		}
		if wait <= opts.StallBound {
			continue
		}
		// Blame the last fault that began before the result was late.
		k := stallKey{lastStartedBy(faults, lateAt(windows, produced, opts.StallBound)), m.exp.at.p}
		s := stalls[k]
		if s == nil {
			s = &stallInfo{}
			stalls[k] = s
		}
		s.n++
		if wait > s.worst {
			s.worst, s.id = wait, m.exp.id
		}
	}
	keys := make([]stallKey, 0, len(stalls))
	for k := range stalls {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b stallKey) int {
		return cmp.Or(cmp.Compare(a.fault, b.fault), cmp.Compare(a.partition, b.partition))
	})
	for _, k := range keys {
		s := stalls[k]
		name := "no fault"
		if k.fault >= 0 {
			name = faults[k.fault].Name
		}
		rep.add(Stall, 1, "after %s, partition %d: %d result(s) waited longer than %v outside faults, the worst %v (command %s)",
			name, k.partition, s.n, opts.StallBound, s.worst.Round(10*time.Millisecond), s.id)
	}
	rep.Recovery = rec
}

// window is a span of time during which some fault was in progress.
type window struct{ from, to time.Time }

// mergeWindows returns the union of the faults' spans, sorted; faults must
// be sorted by Start.
func mergeWindows(faults []Fault) []window {
	var out []window
	for _, f := range faults {
		if !f.End.After(f.Start) {
			continue
		}
		if n := len(out); n > 0 && !f.Start.After(out[n-1].to) {
			if f.End.After(out[n-1].to) {
				out[n-1].to = f.End
			}
			continue
		}
		out = append(out, window{f.Start, f.End})
	}
	return out
}

// waitOutside is the part of [from, to] outside every window.
func waitOutside(windows []window, from, to time.Time) time.Duration {
	d := to.Sub(from)
	for _, w := range windows {
		lo, hi := maxTime(w.from, from), minTime(w.to, to)
		if hi.After(lo) {
			d -= hi.Sub(lo)
		}
	}
	return max(d, 0)
}

// lateAt is when a command produced at from has waited bound outside the
// windows.
func lateAt(windows []window, from time.Time, bound time.Duration) time.Time {
	t, left := from, bound
	for _, w := range windows {
		if !w.to.After(t) {
			continue
		}
		if gap := w.from.Sub(t); gap >= left {
			break
		} else if gap > 0 {
			left -= gap
		}
		t = w.to
	}
	return t.Add(left)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// lastStartedBy returns the index of the fault that began last at or
// before t, or -1.
func lastStartedBy(faults []Fault, t time.Time) int {
	at := -1
	for i, f := range faults {
		if !f.Start.After(t) && (at < 0 || f.Start.After(faults[at].Start)) {
			at = i
		}
	}
	return at
}

// modelEvent is an event the model predicts or the log holds.
type modelEvent struct {
	version   int64
	e         event
	causation string
	time      string // when it was recorded, as written
	at        pos
}

func (m modelEvent) String() string {
	return fmt.Sprintf("v%d %s by %s", m.version, m.e, m.causation)
}

// eventDoc is the part of a CloudEvents document the checker reads.
type eventDoc struct {
	Type          string          `json:"type"`
	Subject       string          `json:"subject"`
	AggregateType string          `json:"aggregatetype"`
	Version       *int64          `json:"aggregateversion"`
	Causation     string          `json:"causationid"`
	Time          string          `json:"time"`
	Data          json.RawMessage `json:"data"`
}

// checkEvents checks the events topic and returns each aggregate's readable
// events in offset order.
func checkEvents(h *History, want map[string][]modelEvent, rep *Report) map[string][]modelEvent {
	have := map[string][]modelEvent{}
	keys := map[string]int{}
	for _, r := range sortRecords(h.Events) {
		rep.Stats.Events++
		keys[string(r.Key)]++
		var d eventDoc
		if err := json.Unmarshal(r.Value, &d); err != nil || d.Version == nil || d.Subject == "" {
			rep.add(UnreadableRecord, 1, "event %q at %s does not decode: %v", r.Key, posOf(r), err)
			continue
		}
		e, err := decodeEventData(d.Type, d.Data)
		if err != nil {
			rep.add(UnreadableRecord, 1, "event %q at %s: %v", r.Key, posOf(r), err)
			continue
		}
		id, ver, ok := splitEventKey(r.Key)
		if !ok || id != d.Subject || ver != *d.Version || d.AggregateType != "order" || r.Partition != owner([]byte(d.Subject), h.Partitions) {
			rep.add(MisplacedEvent, 1, "event at %s: key %q, subject %q, version %d, type %q, partition %d (owner %d)",
				posOf(r), r.Key, d.Subject, *d.Version, d.AggregateType, r.Partition, owner([]byte(d.Subject), h.Partitions))
		}
		have[d.Subject] = append(have[d.Subject], modelEvent{version: *d.Version, e: e, causation: d.Causation, time: d.Time, at: posOf(r)})
	}
	keyList := make([]string, 0, len(keys))
	for k, n := range keys {
		if n > 1 {
			keyList = append(keyList, k)
		}
	}
	sort.Strings(keyList)
	for _, k := range keyList {
		rep.add(DuplicateEventKey, keys[k]-1, "event key %q written %d times", k, keys[k])
	}
	rep.Stats.Aggregates = len(have)

	// Versions 0..n; and every command's events come from one decision:
	// one aggregate, one time stamp (all events of one decision carry the
	// same time), consecutive versions.
	type causeInfo struct {
		decisions []decision
		versions  []int64
		// byDecision are the versions of each decision's events.
		byDecision map[decision][]int64
	}
	causes := map[string]*causeInfo{}
	var causeOrder []string
	for _, id := range sortedKeys(have) {
		evs := have[id]
		for i, e := range evs {
			if e.version != int64(i) {
				var vs []int64
				for _, e := range evs {
					vs = append(vs, e.version)
				}
				rep.add(VersionSequence, 1, "aggregate %q has versions %v in offset order", id, abbreviate(vs))
				break
			}
		}
		for _, e := range evs {
			if e.causation == "" {
				continue
			}
			c := causes[e.causation]
			if c == nil {
				c = &causeInfo{byDecision: map[decision][]int64{}}
				causes[e.causation] = c
				causeOrder = append(causeOrder, e.causation)
			}
			d := decision{id, e.time}
			if !slices.Contains(c.decisions, d) {
				c.decisions = append(c.decisions, d)
			}
			c.versions = append(c.versions, e.version)
			c.byDecision[d] = append(c.byDecision[d], e.version)
		}
	}
	for _, cause := range causeOrder {
		c := causes[cause]
		if !appliedOnce(c.decisions, c.byDecision, have) {
			rep.add(CommandAppliedTwice, 1, "command %s caused events at versions %v in %d decision(s) %v", cause, c.versions, len(c.decisions), c.decisions)
		}
	}

	// The events the model predicts.
	for _, id := range sortedKeys(mergeKeys(have, want)) {
		h, w := have[id], want[id]
		if i := firstDifference(h, w); i >= 0 {
			hs, ws := "none", "none"
			if i < len(h) {
				hs = h[i].String()
			}
			if i < len(w) {
				ws = w[i].String()
			}
			rep.add(HistoryMismatch, 1, "aggregate %q: %d events, the model predicts %d; event %d is %s, the model says %s", id, len(h), len(w), i, hs, ws)
		}
	}
	return have
}

func firstDifference(h, w []modelEvent) int {
	for i := range max(len(h), len(w)) {
		if i >= len(h) || i >= len(w) || h[i].version != w[i].version || h[i].e != w[i].e || h[i].causation != w[i].causation {
			return i
		}
	}
	return -1
}

func abbreviate(vs []int64) string {
	if len(vs) <= 12 {
		return fmt.Sprint(vs)
	}
	return fmt.Sprintf("%v … %v (%d)", vs[:6], vs[len(vs)-6:], len(vs))
}

// splitEventKey cuts an event key "<id>@<20 digits>" at its last "@".
func splitEventKey(k []byte) (string, int64, bool) {
	i := strings.LastIndexByte(string(k), '@')
	if i < 0 || len(k)-i-1 != 20 {
		return "", 0, false
	}
	v, err := strconv.ParseInt(string(k[i+1:]), 10, 64)
	return string(k[:i]), v, err == nil
}

// stateDoc is a state record.
type stateDoc struct {
	AggregateType string     `json:"aggregate_type"`
	AggregateID   string     `json:"aggregate_id"`
	Version       int64      `json:"version"`
	State         orderState `json:"state"`
}

// checkState compares each aggregate's last state record with the replay of
// its events.
func checkState(h *History, events map[string][]modelEvent, rep *Report) {
	last := map[string]stateDoc{}
	where := map[string]pos{}
	for _, r := range sortRecords(h.State) {
		rep.Stats.StateRecords++
		var d stateDoc
		if err := json.Unmarshal(r.Value, &d); err != nil || d.AggregateID != string(r.Key) {
			rep.add(UnreadableRecord, 1, "state record %q at %s does not decode or names another aggregate (%q): %v", r.Key, posOf(r), d.AggregateID, err)
			continue
		}
		if w, ok := where[d.AggregateID]; ok && w.p != r.Partition {
			rep.add(StateMismatch, 1, "aggregate %q has state records on partitions %d and %d", d.AggregateID, w.p, r.Partition)
		}
		last[d.AggregateID], where[d.AggregateID] = d, posOf(r)
	}
	for _, id := range sortedKeys(mergeKeys(events, last)) {
		evs, ok := events[id]
		d, hasState := last[id]
		switch {
		case !ok:
			rep.add(StateMismatch, 1, "aggregate %q has a state record (version %d) but no events", id, d.Version)
			continue
		case !hasState:
			rep.add(StateMismatch, 1, "aggregate %q has %d events but no state record", id, len(evs))
			continue
		}
		m := newModel()
		for _, e := range evs {
			m.replay(e.e, e.causation)
		}
		version := evs[len(evs)-1].version
		if d.Version != version || !equalStates(d.State, m.state) {
			got, _ := json.Marshal(d.State)
			want, _ := json.Marshal(m.state)
			rep.add(StateMismatch, 1, "aggregate %q: last state record (at %s) is version %d %s; its events replay to version %d %s",
				id, where[id], d.Version, got, version, want)
		}
	}
}

// checkDLQ checks that the DLQ holds exactly the records that must be
// dead-lettered, each once, with its original key and value.
func checkDLQ(h *History, want map[pos]*Record, rep *Report) {
	seen := map[pos]bool{}
	for _, r := range sortRecords(h.DLQ) {
		rep.Stats.DLQ++
		p, err1 := strconv.ParseInt(r.Headers[HeaderSourcePart], 10, 32)
		o, err2 := strconv.ParseInt(r.Headers[HeaderSourceOffset], 10, 64)
		src := pos{int32(p), o}
		orig := want[src]
		switch {
		case err1 != nil || err2 != nil || r.Headers[HeaderSourceTopic] != h.CommandsTopic:
			rep.add(DLQExtra, 1, "DLQ record at %s names no command record (headers %v)", posOf(r), r.Headers)
		case orig == nil:
			rep.add(DLQExtra, 1, "DLQ record at %s is of the command record at %s, which must not be dead-lettered", posOf(r), src)
		case seen[src]:
			rep.add(DLQExtra, 1, "DLQ record at %s is a second copy of the command record at %s", posOf(r), src)
		case string(r.Key) != string(orig.Key) || string(r.Value) != string(orig.Value):
			rep.add(DLQExtra, 1, "DLQ record at %s does not carry the original bytes of %s", posOf(r), src)
		}
		if orig != nil {
			seen[src] = true
		}
	}
	missing := make([]pos, 0)
	for p := range want {
		if !seen[p] {
			missing = append(missing, p)
		}
	}
	slices.SortFunc(missing, func(a, b pos) int { return cmp.Or(cmp.Compare(a.p, b.p), cmp.Compare(a.o, b.o)) })
	for _, p := range missing {
		rep.add(DLQMissing, 1, "the command record at %s (key %q) is not in the DLQ", p, want[p].Key)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func mergeKeys[A, B any](a map[string]A, b map[string]B) map[string]struct{} {
	out := make(map[string]struct{}, len(a)+len(b))
	for k := range a {
		out[k] = struct{}{}
	}
	for k := range b {
		out[k] = struct{}{}
	}
	return out
}

// decision is one decision of the processor: its events share an aggregate
// and a time stamp.
type decision struct {
	aggregate, time string
}

// appliedOnce reports whether a command's events are what one decision
// makes, or what several make where each after the first came once the
// command had left the aggregate's idempotency window: at least
// IdempotencyWindow other commands produced events between them. Such a
// resend is a new command by the documented contract (the model predicts
// it accepted, and the outcome check holds the processor to that).
func appliedOnce(decisions []decision, byDecision map[decision][]int64, have map[string][]modelEvent) bool {
	consecutive := func(vs []int64) bool {
		for i := 1; i < len(vs); i++ {
			if vs[i] != vs[i-1]+1 {
				return false
			}
		}
		return true
	}
	for _, d := range decisions {
		if !consecutive(byDecision[d]) {
			return false
		}
	}
	for i := 1; i < len(decisions); i++ {
		prev, next := byDecision[decisions[i-1]], byDecision[decisions[i]]
		agg := decisions[i-1].aggregate
		if agg != decisions[i].aggregate || len(prev) == 0 || len(next) == 0 {
			return false
		}
		others := map[string]struct{}{}
		for _, e := range have[agg] {
			if e.version > prev[len(prev)-1] && e.version < next[0] && e.causation != "" {
				others[e.causation] = struct{}{}
			}
		}
		if len(others) < IdempotencyWindow {
			return false
		}
	}
	return true
}
