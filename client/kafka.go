package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
)

// Kafka says how to reach the brokers. One value serves a Producer, a
// Subscriber and ReadHistory alike, so a command-line tool builds it once from
// its flags.
type Kafka struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// Options are extra franz-go options added to every client this package
	// creates: TLS (kgo.DialTLSConfig), SASL (kgo.SASL), a dialer, logging.
	// Where this package sets an option itself (partitioner, acks,
	// isolation level, group and consume settings) its setting wins; do
	// not pass consume or transactional options.
	Options []kgo.Opt
}

// Validate reports a missing broker list.
func (k Kafka) Validate() error {
	if len(k.Brokers) == 0 {
		return errors.New("no Kafka brokers: set Kafka.Brokers to at least one host:port")
	}
	for _, b := range k.Brokers {
		if b == "" {
			return errors.New("an empty broker address in Kafka.Brokers: remove it or write host:port")
		}
	}
	return nil
}

// newClient returns a franz-go client with the seed brokers, the caller's
// options, then extra (which win).
func (k Kafka) newClient(extra ...kgo.Opt) (*kgo.Client, error) {
	opts := make([]kgo.Opt, 0, 1+len(k.Options)+len(extra))
	opts = append(opts, kgo.SeedBrokers(k.Brokers...))
	opts = append(opts, k.Options...)
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating Kafka client for %v: %w", k.Brokers, err)
	}
	return cl, nil
}

// EventDecoder turns one events-topic record value into an Event. Both
// *aggregates.Registry (events of several aggregate types) and
// aggregates.Kind (one type) implement it. It must be safe for concurrent use:
// a Subscriber calls it from one goroutine per partition.
type EventDecoder interface {
	// DecodeEvent decodes one CloudEvents JSON document.
	DecodeEvent(b []byte) (aggregates.Event, error)
}

// ErrClosed is returned by the Producer's methods once Close was called,
// including to calls that were waiting for results at the time.
var ErrClosed = errors.New("client: producer closed")

// ErrNoResult is matched by the error of Send and SendAll when their context
// ended after the commands were published but before every result arrived.
// The commands were written and may still be processed: resending them with
// the same ids is safe, because the processor reports a repeated id as a
// duplicate instead of acting twice. The error also matches the context's
// error (context.DeadlineExceeded or context.Canceled).
var ErrNoResult = errors.New("no result before the context ended")

// ErrTopicMissing is matched by errors about a topic that does not exist.
// Create the topics of a prefix with `chronicle topics <prefix> --create`
// (or topics.Ensure) and start a processor for it.
var ErrTopicMissing = errors.New("topic does not exist")

// partitionOffsets lists, with the given listing function, the offset of
// every partition of topic; a missing topic yields ErrTopicMissing.
func partitionOffsets(ctx context.Context, list func(context.Context, ...string) (kadm.ListedOffsets, error), topic string) (map[int32]int64, error) {
	listed, err := list(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing offsets of topic %s: %w", topic, err)
	}
	out := map[int32]int64{}
	var problems []error
	listed.Each(func(o kadm.ListedOffset) {
		switch {
		case o.Err != nil && errors.Is(o.Err, kerr.UnknownTopicOrPartition):
			problems = append(problems, o.Err)
		case o.Err != nil:
			problems = append(problems, fmt.Errorf("partition %d: %w", o.Partition, o.Err))
		default:
			out[o.Partition] = o.Offset
		}
	})
	if len(out) == 0 && (len(problems) == 0 || errors.Is(errors.Join(problems...), kerr.UnknownTopicOrPartition)) {
		return nil, fmt.Errorf("topic %s: %w: create it with `chronicle topics <prefix> --create`", topic, ErrTopicMissing)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("listing offsets of topic %s: %w", topic, errors.Join(problems...))
	}
	return out, nil
}

// orDiscard returns l, or a logger that drops everything when l is nil:
// this package is silent unless given a logger.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
