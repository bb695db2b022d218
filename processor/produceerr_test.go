package processor

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/topics"
)

// TestARefusedRecordAbortsItsTransaction makes the broker refuse, once,
// the first produce to the state or the events topic with an error the
// client does not retry and that leaves the producer usable
// (MESSAGE_TOO_LARGE): only that batch fails. The transaction must abort
// and be retried, not commit the command's other records without it.
// (Found by a review: the state records, produced just before End, and a
// transaction's last poll were committed without the refused batch.)
func TestARefusedRecordAbortsItsTransaction(t *testing.T) {
	for _, topic := range []string{"state", "events"} {
		t.Run(topic, func(t *testing.T) {
			c := startCluster(t)
			kind := counterKind()
			names := topics.For("refused")
			createTopics(t, c, "refused", 1)
			refused := map[string]string{"state": names.State, "events": names.Events}[topic]
			c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: refused, Err: kerr.MessageTooLarge, Count: 1})
			cfg := testConfig(t, c, "refused-1", Binding{Kind: kind, Prefix: "refused"})
			cfg.Partitions = 1
			rn := startProcessor(t, cfg)
			produceAll(t, newProducer(t, c), []*kgo.Record{command(t, kind, names.Commands, "c-0", createCounter{}, nil)})
			for _, r := range waitResults(t, c, names.Results, 1, 30*time.Second) {
				if r.Status != aggregates.StatusAccepted {
					t.Fatalf("result %+v", r)
				}
			}
			produceAll(t, newProducer(t, c), []*kgo.Record{command(t, kind, names.Commands, "c-0", addCounter{N: 2}, nil)})
			waitResults(t, c, names.Results, 2, 30*time.Second)

			if st := rn.p.Stats(); st.TxnsAborted == 0 || st.ForeignWrites != 0 {
				t.Errorf("%+v: want an aborted transaction (the refused one) and no foreign write", st)
			}
			var versions []int64
			for _, e := range eventsByAggregate(t, c, kind, names.Events, 1)["c-0"] {
				versions = append(versions, e.Version)
			}
			if len(versions) != 2 || versions[0] != 0 || versions[1] != 1 {
				t.Errorf("the events of c-0 have versions %v, want [0 1]", versions)
			}
			var states []int64
			for _, r := range readAll(t, c, names.State) {
				states = append(states, int64(len(r.Value)))
			}
			if len(states) != 2 {
				t.Errorf("%d state records for two committed commands, want 2", len(states))
			}
		})
	}
}
