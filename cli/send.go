package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/topics"
)

const sendSynopsis = `send PREFIX AGGREGATE_ID TYPE ['JSON'] [flags]
       {prog} send PREFIX [-] [flags] < commands.jsonl

Publishes commands to PREFIX.commands. With AGGREGATE_ID and TYPE it sends one
command whose data is JSON (default {}); with no more arguments, or "-", it
reads one command per line from stdin, either {"aggregate_id","type","data"}
or a full command envelope (a missing "id" gets a new ULID). TYPE may be short
("{type}") or qualified ("{kind}.{type}"). Every command is checked against
its aggregate type before anything is sent: an unknown type or a misspelt data
field is refused here, and then nothing is sent.

With --wait, each result is printed on one line (status, command type,
aggregate, version, and the code and reason of a refusal), and the exit status
is 1 if any command was rejected or invalid or got no result in time.

Examples:
  {prog} send {prefix} {id} {type} '{data}' --wait
  {prog} send {prefix} {id} {type} '{data}' --expected-version -1 --actor alice
  {prog} send {prefix} --wait < commands.jsonl`

// sendBatch is how many commands are published (and awaited) at once.
const sendBatch = 500

// optionalInt64 is an integer flag that knows whether it was set.
type optionalInt64 struct {
	v   int64
	set bool
}

func (o *optionalInt64) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatInt(o.v, 10)
}

func (o *optionalInt64) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not an integer: %q", s)
	}
	o.v, o.set = v, true
	return nil
}

// commandInput is one command as a user writes it: on a stdin line, or
// assembled from the arguments. It is a superset of the wire envelope whose
// fields are all optional but type and aggregate_id.
type commandInput struct {
	ID              string               `json:"id"`
	Type            string               `json:"type"`
	AggregateID     string               `json:"aggregate_id"`
	ExpectedVersion *int64               `json:"expected_version"`
	Data            json.RawMessage      `json:"data"`
	Metadata        *aggregates.Metadata `json:"metadata"`
}

// commandDefaults fill in what a commandInput leaves out.
type commandDefaults struct {
	expectedVersion *int64
	metadata        aggregates.Metadata
}

// runSend is `chronicle send`: it checks commands against their aggregate
// type, publishes them and, with --wait, prints their results.
func runSend(ctx context.Context, args []string, s *session) int {
	fs := newFlags("send", sendSynopsis, s)
	var k kafkaFlags
	k.register(fs, "127.0.0.1:9092")
	wait := fs.Bool("wait", false, "wait for every command's result and print it; exit 1 if any was rejected or invalid")
	timeout := fs.Duration("timeout", 30*time.Second, "bound on publishing and, with --wait, on waiting for every result")
	var expected optionalInt64
	fs.Var(&expected, "expected-version", "version the aggregate must be at for the command to run (-1: must not exist yet); from stdin, for every command that sets none")
	actor := fs.String("actor", "", "on whose behalf the commands are sent (metadata.actor), for commands that set none")
	correlation := fs.String("correlation-id", "", "correlation id of the commands (metadata.correlation_id), for commands that set none")
	aggs := fs.String("aggregates", s.kinds.defaultSpec(), "topic prefix=aggregate type pairs, used to check commands before sending")
	asJSON := fs.Bool("json", false, "print each result (with --wait), or each published command, as one JSON line")
	pos, code, done := parseFlags(fs, args)
	if done {
		return code
	}
	if len(pos) < 1 || len(pos) > 4 || (len(pos) == 2 && pos[1] != "-") {
		fs.Usage()
		return 2
	}
	if *timeout <= 0 {
		return fail(s, "send", fmt.Errorf("--timeout %v: must be positive, e.g. 30s", *timeout))
	}
	if expected.set && expected.v < -1 {
		return fail(s, "send", fmt.Errorf("--expected-version %d: must be -1 (aggregate must not exist) or a version ≥ 0", expected.v))
	}
	prefix, kind, err := s.kinds.resolve(*aggs, pos[0])
	if err != nil {
		return fail(s, "send", err)
	}
	defaults := commandDefaults{metadata: aggregates.Metadata{Actor: *actor, CorrelationID: *correlation, Timestamp: time.Now().UTC()}}
	if expected.set {
		defaults.expectedVersion = &expected.v
	}

	var cmds []aggregates.Command
	if len(pos) >= 3 {
		in := commandInput{AggregateID: pos[1], Type: pos[2]}
		if len(pos) == 4 {
			in.Data = json.RawMessage(pos[3])
		}
		cmd, err := buildCommand(kind, in, defaults)
		if err != nil {
			return fail(s, "send", err)
		}
		cmds = append(cmds, cmd)
	} else {
		if isTerminal(s.in) {
			fmt.Fprintf(s.err, "%s send: reading commands from stdin, one JSON object per line; end with Ctrl-D\n", s.name)
		}
		cmds, err = readCommands(s.in, kind, defaults)
		if err != nil {
			fmt.Fprintf(s.err, "%s send: %v\nnothing was sent\n", s.name, err)
			return 1
		}
		if len(cmds) == 0 {
			return fail(s, "send", fmt.Errorf("no commands on stdin: write one JSON object per line, e.g. %s", s.expand(`{"aggregate_id":"{id}","type":"{type}","data":{data}}`)))
		}
	}

	opts, err := k.options()
	if err != nil {
		return fail(s, "send", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	kc := client.Kafka{Brokers: k.brokerList(), Options: opts}
	if err := requireTopic(ctx, kc, topics.For(prefix).Commands); err != nil {
		return fail(s, "send", err)
	}
	p, err := client.NewProducer(client.ProducerConfig{Kafka: kc})
	if err != nil {
		return fail(s, "send", err)
	}
	defer p.Close()

	out := bufio.NewWriter(s.out)
	defer out.Flush()
	color := useColor(s.out)
	var bar *progress
	if len(cmds) > sendBatch {
		bar = startProgress(s.err, "commands", int64(len(cmds)))
		defer bar.Stop()
	}
	failed := 0
	for start := 0; start < len(cmds); start += sendBatch {
		batch := cmds[start:min(start+sendBatch, len(cmds))]
		if !*wait {
			if err := p.PublishAll(ctx, prefix, batch); err != nil {
				bar.Stop()
				out.Flush()
				if start > 0 {
					fmt.Fprintf(s.err, "%s send: the first %d of %d commands were published\n", s.name, start, len(cmds))
				}
				return fail(s, "send", err)
			}
			bar.Pause(func() {
				for i := range batch {
					printPublished(out, color, *asJSON, &batch[i])
				}
				out.Flush()
			})
			bar.Add(int64(len(batch)))
			continue
		}
		results, err := p.SendAll(ctx, prefix, batch)
		bar.Pause(func() {
			for i := range batch {
				if i >= len(results) || results[i].CommandID == "" {
					// Only when err says why (ErrNoResult).
					if !*asJSON {
						printNoResult(out, color, &batch[i])
					}
					continue
				}
				printResult(out, color, *asJSON, &batch[i], results[i])
				if st := results[i].Status; st == aggregates.StatusRejected || st == aggregates.StatusInvalid {
					failed++
				}
			}
			out.Flush()
		})
		bar.Add(int64(len(batch)))
		if err != nil {
			bar.Stop()
			if errors.Is(err, client.ErrNoResult) && errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("%w; raise --timeout to wait longer", err)
			}
			return fail(s, "send", err)
		}
	}
	bar.Stop()
	if failed > 0 {
		out.Flush()
		fmt.Fprintf(s.err, "%s send: %d of %d commands were not accepted\n", s.name, failed, len(cmds))
		return 1
	}
	return 0
}

// readCommands reads one command per line of r (blank lines are skipped)
// and checks every one. It reports the problems of up to ten lines at once.
func readCommands(r io.Reader, kind aggregates.Kind, defaults commandDefaults) ([]aggregates.Command, error) {
	const maxReported = 10
	br := bufio.NewReader(r)
	var cmds []aggregates.Command
	var problems []error
	bad := 0
	for n := 1; ; n++ {
		line, readErr := br.ReadBytes('\n')
		if readErr != nil && !errors.Is(readErr, io.EOF) {
			return nil, fmt.Errorf("reading stdin at line %d: %w", n, readErr)
		}
		if trimmed := bytes.TrimSpace(line); len(trimmed) > 0 {
			cmd, err := parseCommandLine(trimmed, kind, defaults)
			if err != nil {
				bad++
				if bad <= maxReported {
					problems = append(problems, fmt.Errorf("line %d: %w", n, err))
				}
			} else {
				cmds = append(cmds, cmd)
			}
		}
		if readErr != nil {
			break
		}
	}
	if bad > maxReported {
		problems = append(problems, fmt.Errorf("and %d more lines with problems", bad-maxReported))
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return cmds, nil
}

// parseCommandLine decodes one stdin line into a checked command.
func parseCommandLine(line []byte, kind aggregates.Kind, defaults commandDefaults) (aggregates.Command, error) {
	var in commandInput
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return aggregates.Command{}, fmt.Errorf("%v: write a JSON object {\"aggregate_id\",\"type\",\"data\"} or a command envelope "+
			"(id, type, aggregate_id, expected_version, data, metadata)", err)
	}
	if dec.More() {
		return aggregates.Command{}, errors.New("more than one JSON value on the line: write one command per line")
	}
	return buildCommand(kind, in, defaults)
}

// buildCommand checks in against kind, as the processor will, and returns
// the command envelope to send: the type qualified ("order.AddLine"), the
// data decoded into its registered Go type and encoded again, a new ULID
// unless in has an id, and defaults for what in leaves out.
func buildCommand(kind aggregates.Kind, in commandInput, defaults commandDefaults) (aggregates.Command, error) {
	var problems []error
	switch {
	case in.AggregateID == "":
		problems = append(problems, errors.New(`"aggregate_id" is missing: say which aggregate the command is for`))
	case len(in.AggregateID) > aggregates.MaxIDLength:
		problems = append(problems, fmt.Errorf("aggregate id is %d bytes, longer than the %d accepted", len(in.AggregateID), aggregates.MaxIDLength))
	}
	var id ulid.ULID
	if in.ID != "" {
		var err error
		if id, err = ulid.ParseStrict(in.ID); err != nil {
			problems = append(problems, fmt.Errorf(`"id" %q is not a ULID (%v): leave it out to get a new one`, in.ID, err))
		} else if id == (ulid.ULID{}) {
			problems = append(problems, errors.New(`"id" is the zero ULID: leave it out to get a new one`))
		}
	}
	if in.ExpectedVersion != nil && *in.ExpectedVersion < -1 {
		problems = append(problems, fmt.Errorf(`"expected_version" %d: must be -1 (aggregate must not exist) or a version ≥ 0`, *in.ExpectedVersion))
	}
	var payload any
	if in.Type == "" {
		problems = append(problems, fmt.Errorf(`"type" is missing: one of %s`, strings.Join(kind.CommandTypes(), ", ")))
	} else if p, err := kind.DecodeCommandData(&aggregates.Command{Type: in.Type, Data: in.Data}); err != nil {
		if errors.Is(err, aggregates.ErrMalformed) {
			if name, fields := commandFields(kind, in.Type); len(fields) > 0 {
				err = fmt.Errorf("%w (the fields of %s are: %s)", err, name, strings.Join(fields, ", "))
			}
		}
		problems = append(problems, err)
	} else {
		payload = p
	}
	if len(problems) > 0 {
		return aggregates.Command{}, joinOnOneLine(problems)
	}
	md := defaults.metadata
	if in.Metadata != nil {
		md = *in.Metadata
		if md.Actor == "" {
			md.Actor = defaults.metadata.Actor
		}
		if md.CorrelationID == "" {
			md.CorrelationID = defaults.metadata.CorrelationID
		}
		if md.Timestamp.IsZero() {
			md.Timestamp = defaults.metadata.Timestamp
		}
	}
	cmd, err := kind.NewCommand(in.AggregateID, payload, md)
	if err != nil {
		return aggregates.Command{}, err
	}
	if in.ID != "" {
		cmd.ID = id
	}
	cmd.ExpectedVersion = defaults.expectedVersion
	if in.ExpectedVersion != nil {
		cmd.ExpectedVersion = in.ExpectedVersion
	}
	return cmd, nil
}

// joinOnOneLine joins problems like errors.Join (each stays matchable with
// errors.Is/As) but separates them with "; ", so that each stays on the
// line of the input it is about.
func joinOnOneLine(problems []error) error {
	if len(problems) == 1 {
		return problems[0]
	}
	args := make([]any, len(problems))
	for i, p := range problems {
		args[i] = p
	}
	return fmt.Errorf(strings.TrimSuffix(strings.Repeat("%w; ", len(problems)), "; "), args...)
}

// commandFields returns the qualified name of a command type and the JSON
// field names of its data, for the error about a misspelt field; no fields
// when it cannot tell.
func commandFields(kind aggregates.Kind, typ string) (string, []string) {
	name := typ
	if !strings.Contains(name, ".") {
		name = kind.Name() + "." + typ
	}
	zero, err := kind.DecodeCommandData(&aggregates.Command{Type: typ})
	if err != nil || zero == nil {
		return name, nil
	}
	t := reflect.TypeOf(zero)
	if t.Kind() != reflect.Struct {
		return name, nil
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		field, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch field {
		case "-":
			continue
		case "":
			field = f.Name
		}
		out = append(out, field)
	}
	return name, out
}

// requireTopic fails with a hint when topic does not exist or Kafka cannot
// be reached.
func requireTopic(ctx context.Context, k client.Kafka, topic string) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.Brokers...)}, k.Options...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	_, err = listOffsets(ctx, kadm.NewClient(cl).ListEndOffsets, topic, k.Brokers)
	return err
}

// printPublished prints a command published without waiting: its status,
// type, aggregate and id, or its envelope as JSON.
func printPublished(w io.Writer, color, asJSON bool, cmd *aggregates.Command) {
	if asJSON {
		b, err := cmd.Encode()
		if err == nil {
			fmt.Fprintf(w, "%s\n", b)
		}
		return
	}
	fmt.Fprintf(w, "%s %s %s id %s\n", paint(color, ansiCyan, "published"), cmd.Type, cmd.AggregateID, cmd.ID)
}

// printResult prints one result: status, command type, aggregate, version,
// and the code and reason of a refusal; or the Result as JSON.
func printResult(w io.Writer, color, asJSON bool, cmd *aggregates.Command, r aggregates.Result) {
	if asJSON {
		b, err := json.Marshal(r)
		if err == nil {
			fmt.Fprintf(w, "%s\n", b)
		}
		return
	}
	typ := r.CommandType
	if typ == "" {
		typ = cmd.Type
	}
	status := fmt.Sprintf("%-9s", r.Status)
	switch r.Status {
	case aggregates.StatusAccepted:
		status = paint(color, ansiGreen, status)
	case aggregates.StatusRejected, aggregates.StatusInvalid:
		status = paint(color, ansiRed, status)
	}
	line := fmt.Sprintf("%s %s %s version %d", status, typ, cmd.AggregateID, r.Version)
	if r.Code != "" || r.Reason != "" {
		line += "  " + r.Code + ": " + r.Reason
	}
	fmt.Fprintln(w, line)
}

// printNoResult prints a command whose result did not arrive in time.
func printNoResult(w io.Writer, color bool, cmd *aggregates.Command) {
	fmt.Fprintf(w, "%s %s %s id %s\n", paint(color, ansiRed, "no result"), cmd.Type, cmd.AggregateID, cmd.ID)
}
