package processor

import (
	"context"
	"fmt"
	"hash/crc32"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/topics"
)

// stream is a set of counter commands and the totals they imply.
type stream struct {
	recs []*kgo.Record
	want map[string]int64
	n    map[string]int // commands per aggregate
}

func counterStream(t testing.TB, kind aggregates.Kind, topic string, aggs, perAgg int) stream {
	s := stream{want: map[string]int64{}, n: map[string]int{}}
	for i := range aggs {
		id := fmt.Sprintf("c-%d", i)
		s.recs = append(s.recs, command(t, kind, topic, id, createCounter{}, nil))
		s.n[id]++
	}
	for j := 1; j < perAgg; j++ {
		for i := range aggs {
			id := fmt.Sprintf("c-%d", i)
			s.recs = append(s.recs, command(t, kind, topic, id, addCounter{N: int64(j), Agg: id}, nil))
			s.want[id] += int64(j)
			s.n[id]++
		}
	}
	return s
}

// checkExactlyOnce asserts every command has one result, every aggregate's
// events are gap-free versions in order, and totals match.
func checkExactlyOnce(t *testing.T, c *kfake.Cluster, kind *aggregates.Definition[counterState], names topics.Names, s stream, timeout time.Duration) {
	t.Helper()
	results := waitResults(t, c, names.Results, len(s.recs), timeout)
	for id, r := range results {
		if r.Status != aggregates.StatusAccepted {
			t.Errorf("command %s: %+v", id, r)
		}
	}
	td, err := newAdmin(t, c).ListTopics(context.Background(), names.Events)
	if err != nil {
		t.Fatal(err)
	}
	events := eventsByAggregate(t, c, kind, names.Events, int32(len(td[names.Events].Partitions)))
	for id, total := range s.want {
		a := kind.New(id)
		if err := a.Load(events[id]); err != nil {
			t.Fatal(err)
		}
		if got := len(events[id]); got != s.n[id] {
			t.Errorf("%s: %d events, want %d", id, got, s.n[id])
		}
		if a.State().Value != total {
			t.Errorf("%s: value %d, want %d", id, a.State().Value, total)
		}
	}
}

func TestCrashedProcessorIsTakenOverExactlyOnce(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	names := topics.For("counters")
	createTopics(t, c, "counters", 6)
	s := counterStream(t, kind, names.Commands, 40, 25)
	prod := newProducer(t, c)

	cfg := testConfig(t, c, "crashy", Binding{Kind: kind, Prefix: "counters"})
	cfg.CommitInterval = 200 * time.Millisecond // leave transactions open long enough to be cut
	first := startProcessor(t, cfg)
	half := len(s.recs) / 2
	produceAll(t, prod, s.recs[:half])
	waitResults(t, c, names.Results, half/4, 30*time.Second)
	first.kill(t) // mid-stream, without ending its transaction

	produceAll(t, prod, s.recs[half:])
	// The restarted instance keeps its transactional id and fences the
	// dead one's open transaction at once.
	second := startProcessor(t, cfg)
	checkExactlyOnce(t, c, kind, names, s, 60*time.Second)
	if st := second.p.Stats(); st.Restores == 0 {
		t.Errorf("second processor did not restore: %+v", st)
	}
}

func TestAbortedTransactionIsRetriedExactlyOnce(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	names := topics.For("counters")
	createTopics(t, c, "counters", 6)
	s := counterStream(t, kind, names.Commands, 30, 20)

	// Every second committing EndTxn fails with an error that forces an abort.
	var ends atomic.Int64
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.UnknownServerError, Count: -1,
		When: func(req kmsg.Request) bool {
			r := req.(*kmsg.EndTxnRequest)
			return r.Commit && ends.Add(1)%2 == 0
		}})
	cfg := testConfig(t, c, "aborty", Binding{Kind: kind, Prefix: "counters"})
	cfg.CommitEvery = 50
	r := startProcessor(t, cfg)
	produceAll(t, newProducer(t, c), s.recs)
	checkExactlyOnce(t, c, kind, names, s, 90*time.Second)
	if st := r.p.Stats(); st.TxnsAborted == 0 {
		t.Errorf("no transaction aborted, the fault did not fire: %+v", st)
	}
}

func TestRebalanceKeepsExactlyOnceAndSingleOwner(t *testing.T) {
	c := startCluster(t)
	var inFlight sync.Map
	var overlaps atomic.Int64
	kind := counterKindHooked(func(agg string) {
		if _, busy := inFlight.LoadOrStore(agg, true); busy {
			overlaps.Add(1)
		}
		time.Sleep(50 * time.Microsecond)
		inFlight.Delete(agg)
	})
	names := topics.For("counters")
	createTopics(t, c, "counters", 6)
	s := counterStream(t, kind, names.Commands, 60, 40)
	prod := newProducer(t, c)
	b := Binding{Kind: kind, Prefix: "counters"}

	startProcessor(t, testConfig(t, c, "r1", b))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < len(s.recs); i += 100 {
			if err := prod.ProduceSync(ctx, s.recs[i:min(i+100, len(s.recs))]...).FirstErr(); err != nil {
				t.Errorf("producing: %v", err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	r2 := startProcessor(t, testConfig(t, c, "r2", b))
	time.Sleep(500 * time.Millisecond)
	r3 := startProcessor(t, testConfig(t, c, "r3", b))
	time.Sleep(500 * time.Millisecond)
	r2.stop(t)
	time.Sleep(300 * time.Millisecond)
	r3.stop(t)
	<-produced
	checkExactlyOnce(t, c, kind, names, s, 90*time.Second)
	if n := overlaps.Load(); n != 0 {
		t.Errorf("%d times an aggregate was handled by two instances at once", n)
	}
}

func TestWrongPartitionCommandsAreForwarded(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	names := topics.For("counters")
	createTopics(t, c, "counters", 6)
	s := counterStream(t, kind, names.Commands, 30, 5)
	// librdkafka's default: crc32 of the key, not murmur2.
	librdkafka := newProducer(t, c, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(kgo.SaramaHasher(crc32.ChecksumIEEE))))
	r := startProcessor(t, testConfig(t, c, "fwd", Binding{Kind: kind, Prefix: "counters"}))
	produceAll(t, librdkafka, s.recs)
	checkExactlyOnce(t, c, kind, names, s, 60*time.Second)
	if st := r.p.Stats(); st.Forwarded == 0 {
		t.Errorf("nothing was forwarded: %+v", st)
	}
	// Forwards leave transaction markers in the commands topic; the lag
	// still reads 0 once every command is handled.
	deadline := time.Now().Add(20 * time.Second)
	for {
		lag, err := r.p.Lag(context.Background())
		var total int64
		for _, parts := range lag {
			for _, n := range parts {
				total += n
			}
		}
		if err == nil && len(lag["counter"]) == 6 && total == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag %v (%v) 20s after every command was handled, want 0 everywhere", lag, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestCompactionKeepsEveryEvent(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	names := topics.For("counters")
	createTopics(t, c, "counters", 6)
	s := counterStream(t, kind, names.Commands, 10, 10)
	r := startProcessor(t, testConfig(t, c, "cmp", Binding{Kind: kind, Prefix: "counters"}))
	produceAll(t, newProducer(t, c), s.recs)
	waitResults(t, c, names.Results, len(s.recs), 60*time.Second)
	r.stop(t) // no open transaction during compaction (kfake quirk)
	before := len(readAll(t, c, names.Events))
	c.Compact()
	after := len(readAll(t, c, names.Events))
	if before != len(s.recs) || after != before {
		t.Fatalf("events before compaction %d, after %d, want %d", before, after, len(s.recs))
	}
	checkExactlyOnce(t, c, kind, names, s, 10*time.Second)
}
