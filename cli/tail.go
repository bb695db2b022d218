package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/topics"
)

const tailSynopsis = `tail PREFIX [--from-beginning] [--follow] [--aggregate ID] [--json] [flags]

Prints the events of PREFIX.events, one line each: time, aggregate@version,
type and data; with --json, each event's CloudEvents JSON document as stored.
Only committed events are shown. Without --follow, tail stops once it has
read up to the end of the topic as it was when tail started; so without
--from-beginning as well, it prints nothing. Events of one aggregate come in
version order; those of different aggregates may interleave.

Examples:
  {prog} tail {prefix} --from-beginning
  {prog} tail {prefix} --follow --aggregate {id}
  {prog} tail {prefix} --from-beginning --json | jq .data`

// runTail is `chronicle tail`: it prints the committed events of a prefix,
// up to the end at its start or, with --follow, until interrupted.
func runTail(ctx context.Context, args []string, s *session) int {
	fs := newFlags("tail", tailSynopsis, s)
	var k kafkaFlags
	k.register(fs, "127.0.0.1:9092")
	fromBeginning := fs.Bool("from-beginning", false, "start with the oldest event instead of the end of the topic")
	follow := fs.Bool("follow", false, "keep printing new events until interrupted (Ctrl-C) instead of stopping at the end")
	aggregate := fs.String("aggregate", "", "print only the events of this aggregate id (reads only its partition)")
	asJSON := fs.Bool("json", false, "print each event's CloudEvents JSON document, one per line")
	pos, code, done := parseFlags(fs, args)
	if done {
		return code
	}
	if len(pos) != 1 || pos[0] == "" {
		fs.Usage()
		return 2
	}
	opts, err := k.clientOptions()
	if err != nil {
		return fail(s, "tail", err)
	}
	out := bufio.NewWriter(s.out)
	defer out.Flush()
	t := tailer{
		topic: topics.For(pos[0]).Events, brokers: k.brokerList(), aggregate: *aggregate,
		fromBeginning: *fromBeginning, follow: *follow, asJSON: *asJSON,
		out: out, errOut: s.err, color: useColor(s.out),
	}
	n, err := t.run(ctx, opts)
	if err != nil {
		out.Flush()
		return fail(s, "tail", err)
	}
	if n == 0 && !*follow && !*fromBeginning {
		fmt.Fprintf(s.err, "%s tail: no events: without --from-beginning only events written after the start are shown; add --follow to wait for them\n", s.name)
	}
	return 0
}

// tailer is one `chronicle tail` run.
type tailer struct {
	topic         string
	brokers       []string
	aggregate     string
	fromBeginning bool
	follow        bool
	asJSON        bool
	out           *bufio.Writer
	errOut        io.Writer
	color         bool
}

// run prints events until it has read to the end offsets listed at the
// start (or, when following, until ctx ends) and returns how many it
// printed. It reads with read_committed; control records are kept so that
// the consumer's position is seen to pass the last stable offset even when
// the partition ends with a transaction marker.
func (t *tailer) run(ctx context.Context, opts []kgo.Opt) (int, error) {
	cl, err := kgo.NewClient(append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return 0, fmt.Errorf("creating Kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := listOffsets(ctx, adm.ListCommittedOffsets, t.topic, t.brokers)
	if err != nil {
		return 0, err
	}
	starts, err := listOffsets(ctx, adm.ListStartOffsets, t.topic, t.brokers)
	if err != nil {
		return 0, err
	}
	parts := make(map[int32]bool, len(ends)) // partition → still to read up to its end
	if t.aggregate != "" {
		parts[topics.NewOwner().Of([]byte(t.aggregate), int32(len(ends)))] = false
	} else {
		for p := range ends {
			parts[p] = false
		}
	}
	consume := make(map[int32]kgo.Offset, len(parts))
	pending := 0
	for p := range parts {
		end, ok := ends[p]
		if !ok {
			return 0, fmt.Errorf("topic %s lists no partition %d of %d: partitions must be numbered 0..n-1", t.topic, p, len(ends))
		}
		if t.fromBeginning {
			consume[p] = kgo.NewOffset().AtStart()
			if end > starts[p] {
				parts[p] = true
				pending++
			}
		} else {
			consume[p] = kgo.NewOffset().At(end)
		}
	}
	if pending == 0 && !t.follow {
		return 0, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{t.topic: consume})

	printed := 0
	for pending > 0 || t.follow {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return printed, nil // interrupted: a normal end
		}
		var ferr error
		fs.EachError(func(topic string, p int32, err error) {
			var ke *kerr.Error
			if errors.As(err, &ke) && !ke.Retriable {
				ferr = errors.Join(ferr, fmt.Errorf("reading %s/%d: %w", topic, p, err))
			}
		})
		if ferr != nil {
			return printed, fmt.Errorf("%w; check the topic and the ACLs of the user", ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if parts[r.Partition] && r.Offset >= ends[r.Partition]-1 {
				parts[r.Partition] = false
				pending--
			}
			if !t.follow && r.Offset >= ends[r.Partition] {
				return // past the end listed at the start
			}
			if r.Attrs.IsControl() {
				return
			}
			if t.print(r) {
				printed++
			}
		})
		if err := t.out.Flush(); err != nil {
			return printed, fmt.Errorf("writing output: %w", err)
		}
	}
	return printed, nil
}

// tailEvent is the part of a CloudEvents document that tail shows. It is
// decoded leniently, without the aggregate type's Go types, so that tail
// reads any prefix.
type tailEvent struct {
	Type    string          `json:"type"`
	Subject string          `json:"subject"`
	Time    time.Time       `json:"time"`
	Version *int64          `json:"aggregateversion"`
	Data    json.RawMessage `json:"data"`
}

// print writes one record, unless it is of another aggregate than asked
// for, and reports whether it did. Records that are not CloudEvents
// documents are skipped with a warning on stderr.
func (t *tailer) print(r *kgo.Record) bool {
	if t.aggregate != "" {
		if id, ok := eventKeyAggregate(r.Key); ok && id != t.aggregate {
			return false
		}
	}
	var e tailEvent
	if err := json.Unmarshal(r.Value, &e); err != nil || e.Type == "" || e.Subject == "" || e.Version == nil {
		if err == nil {
			err = errors.New("type, subject or aggregateversion is missing")
		}
		fmt.Fprintf(t.errOut, "chronicle tail: skipping record at %s/%d offset %d: not a Chronicle CloudEvents document: %v\n", r.Topic, r.Partition, r.Offset, err)
		return false
	}
	if t.aggregate != "" && e.Subject != t.aggregate {
		return false
	}
	if t.asJSON {
		var b bytes.Buffer
		if err := json.Compact(&b, r.Value); err != nil {
			b.Reset()
			b.Write(r.Value)
		}
		b.WriteByte('\n')
		t.out.Write(b.Bytes())
		return true
	}
	var data bytes.Buffer
	if len(e.Data) > 0 && json.Compact(&data, e.Data) != nil {
		data.Reset()
		data.Write(e.Data)
	}
	fmt.Fprintf(t.out, "%s  %s  %s  %s\n",
		paint(t.color, ansiDim, e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00")),
		paint(t.color, ansiBold, fmt.Sprintf("%s@%d", e.Subject, *e.Version)),
		paint(t.color, ansiCyan, e.Type), data.String())
	return true
}

// eventKeyAggregate returns the aggregate id of an event record key
// (topics.EventKey: the id, "@", 20 digits).
func eventKeyAggregate(key []byte) (string, bool) {
	const suffix = 21
	if len(key) <= suffix || key[len(key)-suffix] != '@' {
		return "", false
	}
	for _, c := range key[len(key)-suffix+1:] {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return string(key[:len(key)-suffix]), true
}

// listOffsets lists, with list, an offset of every partition of topic; a
// missing topic or unreachable brokers fail with what to do about it.
func listOffsets(ctx context.Context, list func(context.Context, ...string) (kadm.ListedOffsets, error), topic string, brokers []string) (map[int32]int64, error) {
	listed, err := list(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing the partitions of %s: %w; is Kafka reachable at %s (see --brokers)?", topic, err, strings.Join(brokers, ","))
	}
	out := map[int32]int64{}
	var problems []error
	missing := false
	listed.Each(func(o kadm.ListedOffset) {
		switch {
		case errors.Is(o.Err, kerr.UnknownTopicOrPartition):
			missing = true
		case o.Err != nil:
			problems = append(problems, fmt.Errorf("partition %d: %w", o.Partition, o.Err))
		default:
			out[o.Partition] = o.Offset
		}
	})
	if len(out) == 0 && (missing || len(problems) == 0) {
		prefix := strings.TrimSuffix(strings.TrimSuffix(topic, ".events"), ".commands")
		return nil, fmt.Errorf("topic %s does not exist: check the prefix, start a processor for it (chronicle dev, or chronicle run --aggregates %s=TYPE), or create it with `chronicle topics %s --create`", topic, prefix, prefix)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("listing the partitions of %s: %w", topic, errors.Join(problems...))
	}
	return out, nil
}
