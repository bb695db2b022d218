package processor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/topics"
)

// Issue 8, scenario 4: GroupTransactSession passes only the first revoke to
// the processor until the next End. An idle instance that lost partitions
// to a second and then a third member must not keep claiming them.
func TestRevokesWhileIdleAreNotLost(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	createTopics(t, c, "own", 6)
	cfg := func(id string) Config { return testConfig(t, c, id, Binding{Kind: kind, Prefix: "own"}) }
	var procs []*running
	claimed := func() (total int, owners map[int32][]string) {
		owners = map[int32][]string{}
		for i, r := range procs {
			for _, id := range r.p.Assigned()["own.commands"] {
				owners[id] = append(owners[id], fmt.Sprint("abc"[i:i+1]))
				total++
			}
		}
		return total, owners
	}
	settle := func(members int) {
		t.Helper()
		deadline := time.Now().Add(45 * time.Second)
		for {
			total, owners := claimed()
			each := true
			for _, r := range procs {
				if len(r.p.Assigned()["own.commands"]) == 0 {
					each = false
				}
			}
			if total == 6 && len(owners) == 6 && each {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("with %d members, %d claims of 6 partitions: %v", members, total, owners)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	procs = append(procs, startProcessor(t, cfg("own-a")))
	settle(1)
	procs = append(procs, startProcessor(t, cfg("own-b")))
	settle(2)
	procs = append(procs, startProcessor(t, cfg("own-c")))
	settle(3)
	// And it stays exact: no member holds a partition another holds.
	time.Sleep(2 * time.Second)
	if total, owners := claimed(); total != 6 || len(owners) != 6 {
		t.Fatalf("after settling: %d claims: %v", total, owners)
	}
	// Every member still processes: one command per partition gets its
	// result.
	prod := newProducer(t, c)
	var recs []*kgo.Record
	for _, id := range idsByPartition(6) {
		recs = append(recs, command(t, kind, "own.commands", id, createCounter{}, nil))
	}
	produceAll(t, prod, recs)
	waitResults(t, c, "own.results", len(recs), 30*time.Second)
	var aborted int64
	for _, r := range procs {
		aborted += r.p.Stats().TxnsAborted
	}
	if aborted != 0 {
		t.Errorf("%d transactions aborted; an idle member's stale revoke must not abort its next one", aborted)
	}
}

// Issue 8, scenario 6: a restarted instance fences its dead predecessor's
// open transaction before it restores, instead of waiting for that
// transaction to time out.
func TestRestartFencesThePredecessorAtOnce(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	createTopics(t, c, "fence", 1)
	// The predecessor died with a transaction open on the events partition.
	dead, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID("fence-1"), kgo.TransactionTimeout(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dead.Close)
	if err := dead.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := dead.ProduceSync(ctx, &kgo.Record{Topic: "fence.events", Partition: 0, Key: []byte("x"), Value: []byte("in doubt")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, c, "fence-1", Binding{Kind: kind, Prefix: "fence"})
	cfg.TransactionTimeout = 2 * time.Minute
	start := time.Now()
	r := startProcessor(t, cfg)
	waitStat(t, "restores", func() int64 { return r.p.Stats().Restores }, 1)
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("the restore took %v: it waited for the predecessor's transaction to time out", took)
	}
	// The predecessor's transaction was aborted, not committed later.
	if err := dead.EndTransaction(ctx, kgo.TryCommit); err == nil {
		t.Fatal("the dead predecessor could still commit its transaction")
	}
	for _, rec := range readAll(t, c, "fence.events") {
		if string(rec.Value) == "in doubt" {
			t.Fatal("the fenced transaction's record is visible")
		}
	}
}

// Issue 8, scenario 5: a processor of a second consumer group on the same
// topics would process every command a second time. It refuses to start,
// naming the group that serves them; --take-over hands them over, and the
// former group's processors stop.
func TestASecondGroupIsRefusedAndTakeOverStopsTheFirst(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	a := launchProcessor(t, testConfig(t, c, "grp-a", Binding{Kind: kind, Prefix: "grp"}))
	a.p.topicCheckEvery = 200 * time.Millisecond
	<-a.p.Ready()
	cfgB := testConfig(t, c, "grp-b", Binding{Kind: kind, Prefix: "grp"})
	cfgB.Group = "other-group"
	b, err := New(cfgB)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = b.Run(ctx)
	if !errors.Is(err, topics.ErrGroupConflict) || !strings.Contains(err.Error(), "test-group") || !strings.Contains(err.Error(), "--take-over") {
		t.Fatalf("a second group started: %v; want a conflict naming test-group and --take-over", err)
	}
	cfgB.TakeOver = true
	taker := startProcessor(t, cfgB)
	<-taker.p.Ready()
	select {
	case err := <-a.done:
		if err == nil || !strings.Contains(err.Error(), "taken over") {
			t.Fatalf("the former group stopped with %v, want an error saying the topics were taken over", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the former group's processor still runs 20s after the take-over")
	}
	prod := newProducer(t, c)
	rec := command(t, kind, "grp.commands", "c-1", createCounter{}, nil)
	produceAll(t, prod, []*kgo.Record{rec})
	waitResults(t, c, "grp.results", 1, 30*time.Second)
}

// Issue 8, scenario 7: a restore waited to see a record at the end offset
// it took; when the records below it are gone (deleted, compacted) it never
// did, silently. It ends once the log start has passed the end.
func TestRestoreEndsWhenTheTailIsGone(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	createTopics(t, c, "gone", 1)
	prod := newProducer(t, c)
	produceAll(t, prod, []*kgo.Record{
		{Topic: "gone.events", Partition: 0, Key: []byte("x@0"), Value: []byte("{}")},
		{Topic: "gone.events", Partition: 0, Key: []byte("x@1"), Value: []byte("{}")},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm := newAdmin(t, c)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "gone.events", Partition: 0, At: 2})
	if res, err := adm.DeleteRecords(ctx, offs); err != nil || res.Error() != nil {
		t.Fatalf("DeleteRecords: %v %v", err, res.Error())
	}
	r := startProcessor(t, testConfig(t, c, "gone-1", Binding{Kind: kind, Prefix: "gone"}))
	waitStat(t, "restores", func() int64 { return r.p.Stats().Restores }, 1)
}
