package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/client"
)

const historySynopsis = `history PREFIX AGGREGATE_ID [--at-version N | --at-time RFC3339] [--json] [flags]

Time travel: reads every committed event of one aggregate and prints them as
a table (version, time, type, data), then the aggregate's state rebuilt from
them, as JSON. With --at-version or --at-time the state is the one the
aggregate had at that version or time, and the events after that point are
marked with "+" (not applied). With --json it prints one document:
{"events":[CloudEvents...],"state":{...},"version":N}; N is the version of
the state, -1 (state null) when the aggregate did not exist yet.

Examples:
  {prog} history {prefix} {id}
  {prog} history {prefix} {id} --at-version 3
  {prog} history {prefix} {id} --at-time 2026-05-01T12:00:00Z --json`

// runHistory is `chronicle history`: it reads one aggregate's events and
// prints them with the state rebuilt at the chosen version or time.
func runHistory(ctx context.Context, args []string, s *session) int {
	fs := newFlags("history", historySynopsis, s)
	var k kafkaFlags
	k.register(fs, "127.0.0.1:9092")
	var atVersion optionalInt64
	fs.Var(&atVersion, "at-version", "show the state at this version (0 is the first event); default the latest")
	atTime := fs.String("at-time", "", "show the state at this time, RFC 3339 (2026-05-01T12:00:00Z): the events recorded at or before it")
	asJSON := fs.Bool("json", false, `print {"events":[...],"state":{...},"version":N} instead of a table`)
	aggs := fs.String("aggregates", s.kinds.defaultSpec(), "topic prefix=aggregate type pairs, to decode the events and rebuild the state")
	timeout := fs.Duration("timeout", 2*time.Minute, "bound on reading the history")
	pos, code, done := parseFlags(fs, args)
	if done {
		return code
	}
	if len(pos) != 2 || pos[1] == "" {
		fs.Usage()
		return 2
	}
	if atVersion.set && *atTime != "" {
		fmt.Fprintf(s.err, "%s history: give --at-version or --at-time, not both\n", s.name)
		return 2
	}
	if atVersion.set && atVersion.v < -1 {
		return fail(s, "history", fmt.Errorf("--at-version %d: versions start at 0 (-1 is before the first event)", atVersion.v))
	}
	var at time.Time
	if *atTime != "" {
		t, err := time.Parse(time.RFC3339Nano, *atTime)
		if err != nil {
			return fail(s, "history", fmt.Errorf("--at-time %q is not an RFC 3339 time such as 2026-05-01T12:00:00Z or 2026-05-01T14:00:00+02:00: %w", *atTime, err))
		}
		at = t
	}
	if *timeout <= 0 {
		return fail(s, "history", fmt.Errorf("--timeout %v: must be positive, e.g. 2m", *timeout))
	}
	prefix, kind, err := s.kinds.resolve(*aggs, pos[0])
	if err != nil {
		return fail(s, "history", err)
	}
	id := pos[1]
	opts, err := k.options()
	if err != nil {
		return fail(s, "history", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	spin := startProgress(s.err, fmt.Sprintf("reading the history of %s %q from %s.events", kind.Name(), id, prefix), 0)
	events, err := client.ReadHistory(ctx, client.Kafka{Brokers: k.brokerList(), Options: opts}, kind, prefix, id)
	spin.Stop()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w; is Kafka reachable at %s (see --brokers)? Raise --timeout if the partition is large", err, k.brokers)
		}
		return fail(s, "history", err)
	}
	if len(events) == 0 {
		return fail(s, "history", fmt.Errorf("%s %q has no events in %s.events: check the id (it is case-sensitive) and the prefix", kind.Name(), id, prefix))
	}
	latest := events[len(events)-1].Version

	until := aggregates.Until(nil)
	point := fmt.Sprintf("the latest version, %d", latest)
	switch {
	case atVersion.set:
		if atVersion.v > latest {
			return fail(s, "history", fmt.Errorf("--at-version %d: %s %q only reached version %d", atVersion.v, kind.Name(), id, latest))
		}
		until = aggregates.UpToVersion(atVersion.v)
		point = fmt.Sprintf("version %d", atVersion.v)
	case !at.IsZero():
		until = aggregates.UpToTime(at)
		point = at.Format(time.RFC3339Nano)
	}
	agg := kind.NewAggregate(id)
	if err := aggregates.Rebuild(agg, events, until); err != nil {
		return fail(s, "history", err)
	}
	var state any
	if agg.Version() >= 0 {
		state = agg.StateAny()
	}
	if *asJSON {
		if err := writeHistoryJSON(s.out, events, state, agg.Version()); err != nil {
			return fail(s, "history", err)
		}
		return 0
	}
	if err := writeHistoryTable(s.out, useColor(s.out), events, agg.Version()); err != nil {
		return fail(s, "history", err)
	}
	if state == nil {
		fmt.Fprintf(s.out, "\n%s %q did not exist yet at %s: its first event was recorded at %s\n", kind.Name(), id, point, events[0].Time.UTC().Format(time.RFC3339Nano))
		return 0
	}
	b, err := json.MarshalIndent(state, "", "  ")
	if err != nil {
		return fail(s, "history", fmt.Errorf("encoding the state: %w", err))
	}
	switch {
	case agg.Version() < latest && !at.IsZero():
		fmt.Fprintf(s.out, "\nState at %s, that is at version %d (the latest is %d; events marked + are not applied):\n%s\n", point, agg.Version(), latest, b)
	case agg.Version() < latest:
		fmt.Fprintf(s.out, "\nState at version %d (the latest is %d; events marked + are not applied):\n%s\n", agg.Version(), latest, b)
	default:
		fmt.Fprintf(s.out, "\nState at version %d (the latest):\n%s\n", agg.Version(), b)
	}
	return 0
}

// writeHistoryTable prints the events as a table, marking with "+" those
// after version applied (not part of the state shown).
func writeHistoryTable(w io.Writer, color bool, events []aggregates.Event, applied int64) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  VERSION\tTIME\tTYPE\tDATA")
	for i := range events {
		e := &events[i]
		data, err := json.Marshal(e.Data)
		if err != nil {
			return fmt.Errorf("encoding the data of event %d (%s): %w", e.Version, e.Type, err)
		}
		mark := " "
		if e.Version > applied {
			mark = "+"
		}
		fmt.Fprintf(tw, "%s %d\t%s\t%s\t%s\n", mark, e.Version, e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), e.Type, data)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	lines := strings.SplitAfter(buf.String(), "\n")
	for i, line := range lines {
		switch {
		case i == 0:
			line = paint(color, ansiBold, strings.TrimSuffix(line, "\n")) + "\n"
		case strings.HasPrefix(line, "+"):
			line = paint(color, ansiDim, strings.TrimSuffix(line, "\n")) + "\n"
		}
		if _, err := io.WriteString(w, line); err != nil {
			return err
		}
	}
	return nil
}

// writeHistoryJSON prints {"events":[...],"state":...,"version":N}: every
// event as its CloudEvents document, the state at version N (null when
// N is -1).
func writeHistoryJSON(w io.Writer, events []aggregates.Event, state any, version int64) error {
	doc := struct {
		Events  []json.RawMessage `json:"events"`
		State   any               `json:"state"`
		Version int64             `json:"version"`
	}{Events: make([]json.RawMessage, len(events)), State: state, Version: version}
	for i := range events {
		b, err := events[i].Encode()
		if err != nil {
			return err
		}
		doc.Events[i] = b
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
