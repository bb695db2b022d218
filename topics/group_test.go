package topics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ensured starts a kfake broker, creates the topics of prefix with 4
// partitions and returns the broker and a client.
func ensured(t *testing.T, prefix string) (*kfake.Cluster, *kgo.Client, Names) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl := newClient(t, c)
	n := For(prefix)
	ensure(t, cl, n)
	return c, cl, n
}

func newClient(t *testing.T, c *kfake.Cluster) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func ensure(t *testing.T, cl *kgo.Client, n Names) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if parts, err := Ensure(ctx, cl, n, Spec{Partitions: 4, ReplicationFactor: 1}); err != nil || parts != 4 {
		t.Fatalf("Ensure: %d, %v", parts, err)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func owner(t *testing.T, cl *kgo.Client, n Names) Ownership {
	t.Helper()
	o, err := GroupOwner(testCtx(t), cl, n)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func metaEnd(t *testing.T, cl *kgo.Client, n Names) int64 {
	t.Helper()
	ends, err := kadm.NewClient(cl).ListEndOffsets(testCtx(t), n.Meta)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := ends.Lookup(n.Meta, 0)
	return o.Offset
}

func conflictOf(t *testing.T, err error) *GroupConflictError {
	t.Helper()
	var ce *GroupConflictError
	if !errors.Is(err, ErrGroupConflict) || !errors.As(err, &ce) {
		t.Fatalf("got %v, want a *GroupConflictError", err)
	}
	return ce
}

func TestEnsureCreatesTheMetaTopic(t *testing.T) {
	_, cl, n := ensured(t, "orders")
	ctx := testCtx(t)
	td, err := kadm.NewClient(cl).ListTopics(ctx, n.Meta)
	if err != nil || td[n.Meta].Err != nil || len(td[n.Meta].Partitions) != 1 {
		t.Fatalf("%s: %+v, %v; want one partition", n.Meta, td[n.Meta], err)
	}
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, n.Meta)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range rcs[0].Configs {
		if c.Value != nil {
			got[c.Key] = *c.Value
		}
	}
	if got["retention.ms"] != "-1" || got["retention.bytes"] != "-1" || strings.Contains(got["cleanup.policy"], "compact") {
		t.Fatalf("%s configs %v, want kept forever and not compacted", n.Meta, got)
	}
	if _, err := Check(ctx, cl, n); err != nil {
		t.Fatalf("Check after Ensure: %v", err)
	}
}

func TestCheckRefusesAMetaTopicThatLosesOrReordersClaims(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := newClient(t, c)
	ctx := testCtx(t)
	n := For("bad")
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, n.Meta); err != nil {
		t.Fatal(err)
	}
	_, err = Ensure(ctx, cl, n, Spec{Partitions: 4, ReplicationFactor: 1})
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("Ensure over a bad meta topic: %v", err)
	}
	for _, want := range []string{"bad.meta: has 3 partitions", `cleanup.policy is "compact"`, "retention.ms is 604800000, so Kafka would delete", "retention.ms=-1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestClaimGroupFirstClaimWinsAndReclaimingIsIdempotent(t *testing.T) {
	_, cl, n := ensured(t, "orders")
	if o := owner(t, cl, n); o.Group != "" {
		t.Fatalf("fresh topics owned by %+v", o)
	}
	before := time.Now().Add(-time.Second)
	if err := ClaimGroup(testCtx(t), cl, n, "chronicle-dev", false); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	o := owner(t, cl, n)
	if o.Group != "chronicle-dev" || o.Epoch != 1 || o.Since.Before(before) || o.Since.After(time.Now()) {
		t.Fatalf("owner after the first claim: %+v", o)
	}
	end := metaEnd(t, cl, n)
	for range 3 {
		if err := ClaimGroup(testCtx(t), cl, n, "chronicle-dev", false); err != nil {
			t.Fatalf("re-claim by the owner: %v", err)
		}
	}
	if got := metaEnd(t, cl, n); got != end {
		t.Fatalf("re-claims by the owner wrote %d records, want none", got-end)
	}
	if o2 := owner(t, cl, n); o2 != o {
		t.Fatalf("owner changed by re-claims: %+v, was %+v", o2, o)
	}
}

func TestClaimGroupRefusesAnotherGroupSayingWhoOwnsAndHowToTakeOver(t *testing.T) {
	_, cl, n := ensured(t, "orders")
	if err := ClaimGroup(testCtx(t), cl, n, "chronicle-dev", false); err != nil {
		t.Fatal(err)
	}
	err := ClaimGroup(testCtx(t), cl, n, "chronicle", false)
	ce := conflictOf(t, err)
	if ce.Owner != "chronicle-dev" || ce.Group != "chronicle" || ce.Since.IsZero() || ce.Legacy || ce.LostRace {
		t.Fatalf("conflict %+v", ce)
	}
	for _, want := range []string{
		`the topics of "orders" are served by consumer group "chronicle-dev" since ` + ce.Since.UTC().Format(time.RFC3339),
		"orders.meta", `group "chronicle" refuses`, "every command twice",
		"--group chronicle-dev", `stop every processor of group "chronicle-dev"`, "--take-over",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if o := owner(t, cl, n); o.Group != "chronicle-dev" {
		t.Fatalf("a refused claim changed the owner to %+v", o)
	}
}

func TestClaimGroupTakeOverMakesTheNewGroupTheOwner(t *testing.T) {
	_, cl, n := ensured(t, "orders")
	ctx := testCtx(t)
	if err := ClaimGroup(ctx, cl, n, "a", false); err != nil {
		t.Fatal(err)
	}
	if err := ClaimGroup(ctx, cl, n, "b", true); err != nil {
		t.Fatalf("take-over by b: %v", err)
	}
	if o := owner(t, cl, n); o.Group != "b" || o.Epoch != 2 {
		t.Fatalf("owner after take-over: %+v", o)
	}
	if err := ClaimGroup(ctx, cl, n, "b", false); err != nil {
		t.Fatalf("b re-claims: %v", err)
	}
	if ce := conflictOf(t, ClaimGroup(ctx, cl, n, "a", false)); ce.Owner != "b" {
		t.Fatalf("a after the take-over: %+v", ce)
	}
	// Taking over what one owns changes nothing; taking back works.
	if err := ClaimGroup(ctx, cl, n, "b", true); err != nil || owner(t, cl, n).Epoch != 2 {
		t.Fatalf("b takes over from itself: %v, %+v", err, owner(t, cl, n))
	}
	if err := ClaimGroup(ctx, cl, n, "a", true); err != nil {
		t.Fatal(err)
	}
	if o := owner(t, cl, n); o.Group != "a" || o.Epoch != 3 {
		t.Fatalf("owner after taking back: %+v", o)
	}
}

// TestClaimGroupConcurrentClaimsHaveExactlyOneWinner races several groups,
// each with its own client, on fresh topics (first claims) and then on owned
// topics (take-overs), many times.
func TestClaimGroupConcurrentClaimsHaveExactlyOneWinner(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const groups = 4
	clients := make([]*kgo.Client, groups)
	for i := range clients {
		clients[i] = newClient(t, c)
	}
	race := func(n Names, takeOver bool) (winners []string, errs []error) {
		var (
			mu    sync.Mutex
			wg    sync.WaitGroup
			start = make(chan struct{})
		)
		for i, cl := range clients {
			wg.Go(func() {
				group := fmt.Sprintf("g%d", i)
				<-start
				err := ClaimGroup(testCtx(t), cl, n, group, takeOver)
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					winners = append(winners, group)
				} else {
					errs = append(errs, err)
				}
			})
		}
		close(start)
		wg.Wait()
		return winners, errs
	}
	var lostRaces [2]int
	for round := range 25 {
		n := For(fmt.Sprintf("race%d", round))
		ensure(t, clients[0], n)
		// Phase 0: first claims. However the claims interleave, exactly
		// one group wins: a late claimant finds an owner and is refused.
		winners, errs := race(n, false)
		if len(winners) != 1 {
			t.Fatalf("round %d, first claims: winners %v, errors %v; want exactly one winner", round, winners, errs)
		}
		for _, err := range errs {
			ce := conflictOf(t, err)
			if ce.Owner != winners[0] {
				t.Fatalf("round %d, first claims: a loser was told the owner is %q, the winner is %q", round, ce.Owner, winners[0])
			}
			if ce.LostRace {
				lostRaces[0]++
			}
		}
		for _, cl := range clients {
			if o := owner(t, cl, n); o.Group != winners[0] || o.Epoch != 1 {
				t.Fatalf("round %d: a reader sees owner %+v, the winner is %q", round, o, winners[0])
			}
		}
		// Phase 1: take-overs from "old". Take-overs that read the same
		// owner race and one wins; a take-over that starts after another
		// one finished legitimately takes over from it. So each winner
		// moved the epoch by exactly one, losers by nothing, and the
		// owner is a winner.
		if err := ClaimGroup(testCtx(t), clients[0], n, "old", true); err != nil {
			t.Fatal(err)
		}
		winners, errs = race(n, true)
		o := owner(t, clients[0], n)
		if len(winners) == 0 || o.Epoch != 2+int64(len(winners)) || !slices.Contains(winners, o.Group) {
			t.Fatalf("round %d, take-overs: winners %v, owner %+v, errors %v; want the epoch moved once per winner and a winner owning the topics", round, winners, o, errs)
		}
		for _, err := range errs {
			ce := conflictOf(t, err)
			if !slices.Contains(winners, ce.Owner) {
				t.Fatalf("round %d, take-overs: a loser was told the owner is %q, the winners are %v", round, ce.Owner, winners)
			}
			if ce.LostRace {
				lostRaces[1]++
			}
		}
	}
	// The claims must really have raced (written, then lost), or this
	// test proves nothing.
	if lostRaces[0] == 0 || lostRaces[1] == 0 {
		t.Fatalf("claims written and lost: %v (first claims, take-overs); the test does not race", lostRaces)
	}
	t.Logf("claims written and lost: %d first claims, %d take-overs", lostRaces[0], lostRaces[1])
}

func TestClaimGroupRefusesAGroupWithCommittedOffsetsFromBeforeClaims(t *testing.T) {
	_, cl, n := ensured(t, "orders")
	ctx := testCtx(t)
	adm := kadm.NewClient(cl)
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: n.Commands, Partition: 2, At: 17, LeaderEpoch: -1})
	for _, g := range []string{"chronicle", "chronicle-old"} {
		if _, err := adm.CommitOffsets(ctx, g, offs); err != nil {
			t.Fatal(err)
		}
	}
	// A group with offsets on another topic only does not count.
	var other kadm.Offsets
	other.Add(kadm.Offset{Topic: n.Events, Partition: 0, At: 3, LeaderEpoch: -1})
	if _, err := adm.CommitOffsets(ctx, "reader", other); err != nil {
		t.Fatal(err)
	}
	err := ClaimGroup(ctx, cl, n, "chronicle-dev", false)
	ce := conflictOf(t, err)
	if !ce.Legacy || ce.Owner != "chronicle" || len(ce.Others) != 1 || ce.Others[0] != "chronicle-old" {
		t.Fatalf("conflict %+v", ce)
	}
	for _, want := range []string{`consumer group "chronicle", "chronicle-old" (committed offsets on orders.commands`, "--take-over"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if o := owner(t, cl, n); o.Group != "" {
		t.Fatalf("a refused claim recorded %+v", o)
	}
	// The group that served the topics is refused too while another
	// one has offsets there: the operator decides with --take-over.
	if ce := conflictOf(t, ClaimGroup(ctx, cl, n, "chronicle", false)); ce.Owner != "chronicle-old" {
		t.Fatalf("conflict for chronicle: %+v", ce)
	}
	if err := ClaimGroup(ctx, cl, n, "chronicle", true); err != nil {
		t.Fatalf("take-over: %v", err)
	}
	// From now on the claim decides, not the offsets.
	if err := ClaimGroup(ctx, cl, n, "chronicle", false); err != nil {
		t.Fatalf("re-claim after the take-over: %v", err)
	}
	if ce := conflictOf(t, ClaimGroup(ctx, cl, n, "chronicle-old", false)); ce.Legacy || ce.Owner != "chronicle" {
		t.Fatalf("conflict for chronicle-old: %+v", ce)
	}
}

func TestClaimGroupAcceptsTheOnlyGroupWithCommittedOffsets(t *testing.T) {
	_, cl, n := ensured(t, "orders")
	ctx := testCtx(t)
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: n.Commands, Partition: 0, At: 5, LeaderEpoch: -1})
	if _, err := kadm.NewClient(cl).CommitOffsets(ctx, "chronicle", offs); err != nil {
		t.Fatal(err)
	}
	if err := ClaimGroup(ctx, cl, n, "chronicle", false); err != nil {
		t.Fatalf("an upgraded deployment's group is refused: %v", err)
	}
	if o := owner(t, cl, n); o.Group != "chronicle" {
		t.Fatalf("owner %+v", o)
	}
}

func TestFoldIgnoresStaleAndForeignRecords(t *testing.T) {
	rec := func(group string, epoch int64) *kgo.Record {
		v, _ := json.Marshal(claim{Group: group, Epoch: epoch, Time: time.Unix(epoch, 0)})
		return &kgo.Record{Value: v}
	}
	recs := []*kgo.Record{
		{Value: []byte("not json")},
		rec("x", 2),                    // epoch skips ahead: ignored
		rec("a", 1),                    // first claim: wins
		rec("b", 1),                    // lost the race
		rec("a", 2),                    // the owner again: ignored
		rec("c", 2),                    // take-over from a
		rec("b", 2),                    // lost that race
		rec("a", 1),                    // a late first claim: stale
		{Value: []byte(`{"epoch":3}`)}, // no group
	}
	if o := fold(recs); o.Group != "c" || o.Epoch != 2 || !o.Since.Equal(time.Unix(2, 0)) {
		t.Fatalf("fold = %+v, want c at epoch 2", o)
	}
	if o := fold(recs[:4]); o.Group != "a" || o.Epoch != 1 {
		t.Fatalf("fold of the first claims = %+v, want a", o)
	}
}

func TestCheckPartitionsDetectsAPartitionCountChange(t *testing.T) {
	_, cl, n := ensured(t, "orders")
	ctx := testCtx(t)
	if err := CheckPartitions(ctx, cl, n, 4); err != nil {
		t.Fatalf("unchanged topics: %v", err)
	}
	adm := kadm.NewClient(cl)
	if _, err := adm.CreatePartitions(ctx, 2, n.Commands); err != nil {
		t.Fatal(err)
	}
	err := CheckPartitions(ctx, cl, n, 4)
	var pe *PartitionsChangedError
	if !errors.Is(err, ErrPartitionsChanged) || !errors.As(err, &pe) {
		t.Fatalf("after adding partitions to %s: %v, want a *PartitionsChangedError", n.Commands, err)
	}
	if len(pe.Got) != 1 || pe.Got[n.Commands] != 6 || pe.Want != 4 {
		t.Fatalf("error %+v", pe)
	}
	for _, want := range []string{"orders.commands now has 6", "started with 4 partitions", "fork", "cannot be undone", "recreate its topics with 4 partitions", "kafka-topics --alter --partitions"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := adm.CreatePartitions(ctx, 1, n.State); err != nil {
		t.Fatal(err)
	}
	if err := CheckPartitions(ctx, cl, n, 4); !errors.As(err, &pe) || len(pe.Got) != 2 || pe.Got[n.State] != 5 {
		t.Fatalf("after adding a partition to %s too: %v", n.State, err)
	}
	if _, err := adm.DeleteTopic(ctx, n.Events); err != nil {
		t.Fatal(err)
	}
	if err := CheckPartitions(ctx, cl, n, 6); err == nil || errors.Is(err, ErrPartitionsChanged) || !strings.Contains(err.Error(), "orders.events: the brokers do not report") {
		t.Fatalf("with %s deleted: %v, want a plain error", n.Events, err)
	}
}
