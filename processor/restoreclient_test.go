package processor

import (
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTheRestoreClientPoolsOnlyWhatItHandsBack checks the options of the
// client a restore reads with. A full replay (keep false) lends it pooled
// fetch memory, which read recycles once the replay applied the records; a
// restore from a checkpoint (keep true) defers events, whose bytes must stay
// as they are, so it gets no pool (TestCheckpointRestoreDecidesOnItsDeferredTail
// fails if it does: the deferred causation ids are zeroed). Neither keeps a
// fetch session, whose closing costs a round trip.
func TestTheRestoreClientPoolsOnlyWhatItHandsBack(t *testing.T) {
	k := kafkaEvents{events: "events", part: 3}
	for _, keep := range []bool{false, true} {
		cl, err := kgo.NewClient(append(k.clientOpts(42, keep), kgo.SeedBrokers("127.0.0.1:1"))...)
		if err != nil {
			t.Fatal(err)
		}
		// The client's own pools type is a slice of kgo.Pool.
		pools := reflect.ValueOf(cl.OptValue(kgo.WithPools))
		if pooled := pools.Kind() == reflect.Slice && pools.Len() > 0; pooled == keep {
			t.Errorf("keep %v: pools %v", keep, pools)
		}
		if !cl.OptValue(kgo.DisableFetchSessions).(bool) {
			t.Errorf("keep %v: the restore client keeps a fetch session", keep)
		}
		cl.Close()
	}
}
