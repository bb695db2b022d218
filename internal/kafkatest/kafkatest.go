// Package kafkatest starts Kafka brokers for tests: franz-go's kfake, a
// real Kafka protocol server on 127.0.0.1, with group timeouts short enough
// that a test's consumer groups settle in a fraction of a second.
package kafkatest

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/topics"
)

// Start starts a one-broker cluster that accepts group session timeouts
// down to 100 ms, configured further by opts (e.g. Topics, kfake.EnableSASL),
// and closes it at the end of the test.
func Start(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// Topics creates the topics of each prefix (commands, events, state,
// results and DLQ), with partitions partitions each, as the cluster starts.
func Topics(partitions int32, prefixes ...string) kfake.Opt {
	var names []string
	for _, p := range prefixes {
		names = append(names, topics.For(p).All()...)
	}
	return kfake.SeedTopics(partitions, names...)
}

// Kafka returns the connection settings of c for Chronicle's clients, with
// group timeouts and fetch waits short enough for tests.
func Kafka(c *kfake.Cluster) client.Kafka {
	return client.Kafka{Brokers: c.ListenAddrs(), Options: []kgo.Opt{
		kgo.SessionTimeout(time.Second), kgo.HeartbeatInterval(100 * time.Millisecond),
		kgo.RebalanceTimeout(2 * time.Second), kgo.FetchMaxWait(100 * time.Millisecond),
	}}
}

// Client returns a plain franz-go client of c with opts, closed at the end
// of the test.
func Client(t testing.TB, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatalf("a client of kfake: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}
