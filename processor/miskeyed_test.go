package processor

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/topics"
)

// An event record whose key names another aggregate than the event's
// subject (written by a foreign producer, a tool with a bug) is its
// subject's history: a full replay, which reads no keys, applies it to
// its subject. A restore from a checkpoint must not hand the subject out
// without it (invariants 1 and 7), or the next command on it decides on
// stale state and reuses the event's version. 24d5dfd, which deferred the
// tail under the aggregate each record key names, failed this.
//
// Here a foreign record in the events partition, after the checkpoint,
// holds c-4's Add of 100 (version 1) keyed for c-0. The next Add on c-4
// must be version 2, as a full replay decides it.
func TestAMiskeyedTailEventDoesNotLetACommandReuseItsVersion(t *testing.T) {
	e := newTailEnv(t)
	root := e.kind.New("c-4")
	for _, payload := range []any{createCounter{}, addCounter{N: 100}} {
		cmd, err := e.kind.NewCommand("c-4", payload, aggregates.Metadata{})
		if err != nil {
			t.Fatal(err)
		}
		d, err := root.ExecuteEncoded(&cmd, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		root.ClearChanges()
		if root.Version() == 1 {
			produceAll(t, e.prod, []*kgo.Record{{Topic: e.names.Events, Partition: 0, Key: topics.EventKey("c-0", 3), Value: d.Encoded[0]}})
		}
	}
	c := startProcessor(t, e.quiet(t, "tail-c"))
	waitStat(t, "restores", func() int64 { return c.p.Stats().Restores }, 1)
	if st := c.p.Stats(); st.CheckpointRestores != 1 {
		t.Fatalf("restore: %+v, want one from the checkpoint", st)
	}
	e.d.want(command(t, e.kind, e.names.Commands, "c-4", addCounter{N: 1}, nil), aggregates.StatusAccepted, 2)
}
