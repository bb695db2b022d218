// Package client is how applications talk to Chronicle over Kafka: they send
// commands and wait for results, follow the events downstream, and read one
// aggregate's history.
//
// # Connecting
//
// A Kafka value names the seed brokers and carries any franz-go options the
// deployment needs (TLS, SASL). The same value configures every part of this
// package:
//
//	k := client.Kafka{Brokers: []string{"localhost:9092"}, Options: []kgo.Opt{kgo.DialTLSConfig(cfg)}}
//
// # Sending commands
//
// A Producer writes commands to "<prefix>.commands", keyed by aggregate id
// and placed by the murmur2 hash of the key, so they reach the partition
// that owns the aggregate. Publish returns once the brokers acknowledged the
// command (acks=all, idempotent producer); Send also waits for the command's
// Result on "<prefix>.results":
//
//	p, err := client.NewProducer(client.ProducerConfig{Kafka: k})
//	...
//	defer p.Close()
//	cmd, err := order.Definition().NewCommand("order-1", order.CreateOrder{UserID: "u1"}, aggregates.Metadata{})
//	res, err := p.Send(ctx, "orders", cmd) // res.Status: accepted, rejected, duplicate or invalid
//
// Results are matched to waiting calls by command id. The Producer reads
// every partition of the results topic with one goroutine, from end offsets
// listed before the first command was published, so a result is never
// missed, however quickly it is written; read_committed means only results
// of committed processor transactions count. Any number of Sends may run at
// once; SendAll sends a batch and waits for all of its results.
//
// When ctx ends before the result, the error matches ErrNoResult: the
// command was written and may yet be processed. Resending the same command
// (same id) is always safe: the aggregate answers a repeated id with a
// duplicate result instead of acting twice.
//
// # Following events
//
// A Subscriber reads "<prefix>.events" with read_committed, decodes every
// record with an EventDecoder (an *aggregates.Registry or an aggregates.Kind)
// and calls a Handler, in order within each partition, with one goroutine per
// partition. In a consumer group, offsets are committed after the handler
// returned; without one (tools such as `chronicle tail`) nothing is
// committed. A record that cannot be decoded (a schema version newer than
// the running code, an unknown type) stops Run with a *RecordError naming its
// topic, partition, offset, type and schema version, and nothing from it on
// is committed, so a restart with newer code reads it again;
// SkipUndecodable passes over such records instead, with a warning each.
// Logs go to slog.Default() unless a Logger is given.
//
// For a read model in a database, package projection stores each event's
// effect and the consumed position in one transaction: exactly once, where
// a Subscriber is at least once.
//
// # Reading history
//
// ReadHistory reads one aggregate's events from its owner partition up to
// the partition's last stable offset, for aggregates.Rebuild: the state of an
// aggregate at any past version or time.
package client
