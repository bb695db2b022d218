package topics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// One group per topic set
//
// Two consumer groups consuming the same commands topic each process every
// command: two results, and two different events at each version. So the
// topics of an aggregate type remember which group serves them, in the meta
// topic (Names.Meta): one partition, kept forever, holding claim records
// (key: the group, value: a JSON claim). Custom topic configs cannot hold
// this: Kafka rejects config keys it does not know.
//
// The owner is what every reader computes by folding the claims in offset
// order (fold): the owner starts as nobody at epoch 0; a claim changes the
// owner only if it names another group and its epoch is the owner's epoch
// plus one. A first claim carries epoch 1; a take-over carries the epoch
// its writer read plus one. Every other claim is stale and ignored.
//
// Races: Kafka has no compare-and-set, but one partition appends in one
// order that every reader sees. Two groups that read "nobody" (or the same
// owner, for a take-over) at the same moment both append a claim with the
// same epoch; whichever Kafka appended first wins, the second is stale. Each
// claimant reads the partition back up to and including its own record
// before deciding, so both see both claims in the same order and agree:
// exactly one wins, the other gets a *GroupConflictError. Epochs only grow,
// so a delayed claim can never win later (no ABA). A group re-claiming
// topics it owns writes nothing. Compaction would keep only the last claim
// of a group and could reorder what the fold sees, so the topic is not
// compacted; retention is infinite (a handful of records in its lifetime).
// This relies on acks=all (franz-go's default, required by idempotent
// writes): an acknowledged claim is not lost by a leader change.

// ErrGroupConflict is matched (errors.Is) by a *GroupConflictError.
var ErrGroupConflict = errors.New("the topics are served by another consumer group")

// GroupConflictError says that another consumer group serves the topics, so
// a processor of Group must not start: both groups would process every
// command.
type GroupConflictError struct {
	// Prefix is the aggregate type's topic prefix.
	Prefix string
	// Meta is the topic holding the claims.
	Meta string
	// Group is the refused group.
	Group string
	// Owner is the group that serves the topics.
	Owner string
	// Since is when Owner claimed them; zero if Legacy.
	Since time.Time
	// Host is the host Owner's claim was written from, if known.
	Host string
	// Legacy is set when no group has claimed the topics yet but Owner
	// (and Others) have committed offsets on the commands topic: they
	// served it before Chronicle recorded owners.
	Legacy bool
	// Others are further groups with committed offsets on the commands
	// topic (Legacy only).
	Others []string
	// LostRace is set when this processor wrote a claim (a first claim or
	// a take-over) but another group's claim was appended first.
	LostRace bool
}

// Error says which group owns the topics, since when, and how to take them
// over.
func (e *GroupConflictError) Error() string {
	var b strings.Builder
	if e.Legacy {
		groups := append([]string{e.Owner}, e.Others...)
		fmt.Fprintf(&b, "the topics of %q were already served by consumer group %s (committed offsets on %s.commands; no group has claimed them in %s yet)",
			e.Prefix, quoteAll(groups), e.Prefix, e.Meta)
	} else {
		fmt.Fprintf(&b, "the topics of %q are served by consumer group %q since %s", e.Prefix, e.Owner, e.Since.UTC().Format(time.RFC3339))
		if e.Host != "" {
			fmt.Fprintf(&b, " (claimed from host %s", e.Host)
		} else {
			b.WriteString(" (claimed")
		}
		fmt.Fprintf(&b, ", recorded in %s)", e.Meta)
		if e.LostRace {
			b.WriteString("; its claim reached Kafka just before this processor's")
		}
	}
	fmt.Fprintf(&b, "; this processor's group %q refuses to serve them: two groups on the same topics process every command twice (two results, two different events at each version). "+
		"To help the owner, run with --group %s. To move the topics to group %q deliberately, first stop every processor of group %q (or they keep processing every command a second time), then start this one once with --take-over",
		e.Group, e.Owner, e.Group, e.Owner)
	if e.Legacy && len(e.Others) > 0 {
		fmt.Fprintf(&b, " (and stop the processors of %s too)", quoteAll(e.Others))
	}
	if e.Legacy {
		b.WriteString("; if those groups are not Chronicle processors (e.g. an audit consumer), --take-over once just records this group as the owner")
	}
	return b.String()
}

// Is reports whether target is ErrGroupConflict.
func (e *GroupConflictError) Is(target error) bool { return target == ErrGroupConflict }

func quoteAll(groups []string) string {
	q := make([]string, len(groups))
	for i, g := range groups {
		q[i] = fmt.Sprintf("%q", g)
	}
	return strings.Join(q, ", ")
}

// Ownership is which consumer group serves a topic set, from its meta topic.
type Ownership struct {
	// Group is the owning group; empty if no group has claimed the topics.
	Group string
	// Since is when Group claimed the topics.
	Since time.Time
	// Host is the host the claim was written from.
	Host string
	// Epoch counts the owners so far: 1 after the first claim, one more
	// after every take-over.
	Epoch int64
}

// claim is one record of the meta topic.
type claim struct {
	Group    string    `json:"group"`
	Epoch    int64     `json:"epoch"`
	Replaces string    `json:"replaces,omitempty"`
	TakeOver bool      `json:"take_over,omitempty"`
	Time     time.Time `json:"time"`
	Host     string    `json:"host,omitempty"`
}

// fold computes the owner from the meta topic's records in offset order.
// Records that do not decode as claims are ignored.
func fold(recs []*kgo.Record) Ownership {
	var o Ownership
	for _, r := range recs {
		var c claim
		if json.Unmarshal(r.Value, &c) != nil || c.Group == "" {
			continue
		}
		if c.Epoch == o.Epoch+1 && c.Group != o.Group {
			o = Ownership{Group: c.Group, Since: c.Time, Host: c.Host, Epoch: c.Epoch}
		}
	}
	return o
}

// GroupOwner reads which consumer group serves the topics of n; the zero
// Ownership if no group has claimed them yet. It writes nothing, so a
// running processor can call it periodically to notice that another group
// took the topics over (then it must stop). cl must be a plain client (no
// consumer group): its options are reused to read the meta topic.
func GroupOwner(ctx context.Context, cl *kgo.Client, n Names) (Ownership, error) {
	recs, err := readMeta(ctx, cl, n, -1)
	if err != nil {
		return Ownership{}, err
	}
	return fold(recs), nil
}

// ClaimGroup makes group the consumer group that serves the topics of n, or
// refuses. Call it after Ensure and before joining the group:
//
//   - topics no group has claimed are claimed for group, unless another
//     group has committed offsets on the commands topic (it served the
//     topics before owners were recorded): refused;
//   - topics group already owns: nil, nothing written (idempotent);
//   - topics another group owns: refused, unless takeOver, which records
//     group as the new owner. Stop the other group's processors first.
//
// A refusal is a *GroupConflictError (errors.Is ErrGroupConflict) naming
// the owner and how to take over. Of two groups claiming at the same
// moment exactly one wins (see the package's race notes in group.go).
// cl must be a plain client (no consumer group, not transactional), like
// the one given to Ensure; its options are reused to read the meta topic.
func ClaimGroup(ctx context.Context, cl *kgo.Client, n Names, group string, takeOver bool) error {
	if group == "" {
		return fmt.Errorf("claiming the topics of %q: the consumer group is empty; set one (--group)", n.Prefix)
	}
	recs, err := readMeta(ctx, cl, n, -1)
	if err != nil {
		return err
	}
	own := fold(recs)
	switch {
	case own.Group == group:
		return nil
	case own.Group != "" && !takeOver:
		return conflict(n, group, own, false)
	case own.Group == "" && !takeOver:
		if err := refuseLegacyGroups(ctx, cl, n, group); err != nil {
			return err
		}
	}
	host, _ := os.Hostname()
	value, err := json.Marshal(claim{Group: group, Epoch: own.Epoch + 1, Replaces: own.Group, TakeOver: takeOver, Time: time.Now().UTC(), Host: host})
	if err != nil {
		return fmt.Errorf("encoding the claim of group %q: %w", group, err)
	}
	res := cl.ProduceSync(ctx, &kgo.Record{Topic: n.Meta, Partition: 0, Key: []byte(group), Value: value})
	written, err := res.First()
	if err != nil {
		return fmt.Errorf("writing the claim of group %q to %s: %w (the processor needs write access to %s; check the ACLs, and that the client is not transactional)", group, n.Meta, err, n.Meta)
	}
	recs, err = readMeta(ctx, cl, n, written.Offset)
	if err != nil {
		return err
	}
	if own := fold(recs); own.Group != group {
		return conflict(n, group, own, true)
	}
	return nil
}

func conflict(n Names, group string, own Ownership, lostRace bool) error {
	return &GroupConflictError{Prefix: n.Prefix, Meta: n.Meta, Group: group, Owner: own.Group, Since: own.Since, Host: own.Host, LostRace: lostRace}
}

// refuseLegacyGroups returns a *GroupConflictError if groups other than
// group have committed offsets on the commands topic. Listing groups is
// skipped where the ACLs forbid it: the check then only covers the groups
// this client may describe.
func refuseLegacyGroups(ctx context.Context, cl *kgo.Client, n Names, group string) error {
	adm := kadm.NewClient(cl)
	listed, err := adm.ListGroups(ctx)
	if errors.Is(err, kerr.ClusterAuthorizationFailed) || errors.Is(err, kerr.GroupAuthorizationFailed) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing consumer groups to find earlier servers of %s: %w (the processor needs DESCRIBE on the cluster's groups, or start once with --take-over)", n.Commands, err)
	}
	var others []string
	for _, g := range listed.Groups() {
		if g != group && (listed[g].ProtocolType == "consumer" || listed[g].ProtocolType == "") {
			others = append(others, g)
		}
	}
	var found []string
	for g, r := range adm.FetchManyOffsets(ctx, others...) {
		if r.Err != nil {
			continue // e.g. not authorized for this group
		}
		committed := false
		r.Fetched.Each(func(o kadm.OffsetResponse) {
			committed = committed || o.Topic == n.Commands && o.Err == nil && o.At >= 0
		})
		if committed {
			found = append(found, g)
		}
	}
	if len(found) == 0 {
		return nil
	}
	slices.Sort(found)
	return &GroupConflictError{Prefix: n.Prefix, Meta: n.Meta, Group: group, Owner: found[0], Others: found[1:], Legacy: true}
}

// readMeta reads the meta topic from its start up to its high watermark,
// and at least up to and including offset atLeast.
func readMeta(ctx context.Context, cl *kgo.Client, n Names, atLeast int64) ([]*kgo.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	fail := func(err error) ([]*kgo.Record, error) {
		return nil, fmt.Errorf("reading the group claims in %s: %w (create the topics with `chronicle topics %s --create`, and give the processor read access to %s)", n.Meta, err, n.Prefix, n.Meta)
	}
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, n.Meta)
	if err != nil {
		return fail(err)
	}
	ends, err := adm.ListEndOffsets(ctx, n.Meta)
	if err != nil {
		return fail(err)
	}
	start, _ := starts.Lookup(n.Meta, 0)
	end, _ := ends.Lookup(n.Meta, 0)
	if start.Err != nil {
		return fail(start.Err)
	}
	if end.Err != nil {
		return fail(end.Err)
	}
	last := max(end.Offset-1, atLeast) // the last offset to read
	if last < start.Offset {
		return nil, nil
	}
	rd, err := kgo.NewClient(append(slices.Clone(cl.Opts()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{n.Meta: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		return fail(fmt.Errorf("creating a reader from the client's options (pass a client without a consumer group): %w", err))
	}
	defer rd.Close()
	var recs []*kgo.Record
	for {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fail(fmt.Errorf("%w after reading %d records, waiting for offset %d", err, len(recs), last))
		}
		for _, fe := range fs.Errors() {
			if !kerr.IsRetriable(fe.Err) {
				return fail(fe.Err)
			}
		}
		for _, r := range fs.Records() {
			recs = append(recs, r)
			if r.Offset >= last {
				return recs, nil
			}
		}
	}
}
