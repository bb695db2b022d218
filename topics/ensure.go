package topics

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Spec says how to create missing topics.
type Spec struct {
	// Partitions for new topics. All of commands, events and state must
	// share one partition count (co-partitioning).
	Partitions int32
	// ReplicationFactor for new topics; -1 uses the broker default.
	ReplicationFactor int16
}

// Problem is one way an existing topic does not fit Chronicle, with how to
// fix it.
type Problem struct {
	Topic   string
	What    string
	Fix     string
	Missing bool // the topic does not exist
}

// String is "topic: what; fix: how".
func (p Problem) String() string { return fmt.Sprintf("%s: %s; fix: %s", p.Topic, p.What, p.Fix) }

// ErrInvalidTopics is returned by Ensure and Check when existing topics do not
// fit; the error is a *InvalidError listing every Problem.
var ErrInvalidTopics = errors.New("topics do not fit chronicle")

// InvalidError lists what is wrong with the existing topics.
type InvalidError struct{ Problems []Problem }

// Error lists every problem, one a line.
func (e *InvalidError) Error() string {
	var b strings.Builder
	b.WriteString("topics do not fit chronicle:")
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Is reports whether target is ErrInvalidTopics.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalidTopics }

// configs returns the topic configs Chronicle wants for each topic.
func (n Names) configs() map[string]map[string]*string {
	compact := map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
	return map[string]map[string]*string{
		n.Commands: nil,
		n.Events:   compact,
		n.State:    compact,
		n.Results:  nil,
		n.DLQ:      {"retention.ms": kadm.StringPtr("-1")},
	}
}

// All returns the five data topic names, which share one partition count.
// The meta topic (Names.Meta, one partition) is not among them.
func (n Names) All() []string { return []string{n.Commands, n.Events, n.State, n.Results, n.DLQ} }

// metaConfig is the meta topic's config: its few claim records are kept
// forever (cleanup.policy delete with no time or size limit; not compacted,
// see ClaimGroup).
func metaConfig() map[string]*string {
	return map[string]*string{
		"cleanup.policy":  kadm.StringPtr("delete"),
		"retention.ms":    kadm.StringPtr("-1"),
		"retention.bytes": kadm.StringPtr("-1"),
	}
}

// Ensure creates the missing topics of n with spec (the meta topic with one
// partition), then checks all of them (Check). It returns the partition
// count of the commands topic.
func Ensure(ctx context.Context, cl *kgo.Client, n Names, spec Spec) (int32, error) {
	adm := kadm.NewClient(cl)
	if spec.Partitions < 1 {
		return 0, fmt.Errorf("creating topics for %q: partitions is %d, must be at least 1", n.Prefix, spec.Partitions)
	}
	details, err := partitionCounts(ctx, cl, append(n.All(), n.Meta))
	if err != nil {
		return 0, fmt.Errorf("listing topics for %q: %w", n.Prefix, err)
	}
	created := false
	create := func(topic string, partitions int32, cfg map[string]*string) error {
		if _, ok := details[topic]; ok {
			return nil
		}
		resp, err := adm.CreateTopic(ctx, partitions, spec.ReplicationFactor, cfg, topic)
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("creating topic %s (%d partitions, replication %d): %w %s", topic, partitions, spec.ReplicationFactor, err, resp.ErrMessage)
		}
		created = true
		return nil
	}
	for topic, cfg := range n.configs() {
		if err := create(topic, spec.Partitions, cfg); err != nil {
			return 0, err
		}
	}
	if err := create(n.Meta, 1, metaConfig()); err != nil {
		return 0, err
	}
	if !created {
		return Check(ctx, cl, n)
	}
	// New topics take a moment to appear in metadata everywhere.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		parts, err := Check(ctx, cl, n)
		var inv *InvalidError
		if err == nil || !errors.As(err, &inv) || !slices.ContainsFunc(inv.Problems, func(p Problem) bool { return p.Missing }) {
			return parts, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for new topics of %q to appear: %w (last check: %w)", n.Prefix, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Check validates the existing topics of n: all six exist; commands, events
// and state have the same partition count; events and state are compacted;
// the meta topic has one partition and keeps its records forever.
// It returns the commands topic's partition count, or a *InvalidError.
func Check(ctx context.Context, cl *kgo.Client, n Names) (int32, error) {
	adm := kadm.NewClient(cl)
	counts, err := partitionCounts(ctx, cl, append(n.All(), n.Meta))
	if err != nil {
		return 0, fmt.Errorf("listing topics for %q: %w", n.Prefix, err)
	}
	var problems []Problem
	for _, t := range append(n.All(), n.Meta) {
		if _, ok := counts[t]; !ok {
			problems = append(problems, Problem{Topic: t, Missing: true, What: "does not exist", Fix: fmt.Sprintf("run `chronicle topics %s --create`", n.Prefix)})
		}
	}
	want := counts[n.Commands]
	for _, t := range []string{n.Events, n.State} {
		if c, ok := counts[t]; ok && want > 0 && c != want {
			problems = append(problems, Problem{Topic: t, What: fmt.Sprintf("has %d partitions but %s has %d; an aggregate's commands, events and state must share a partition number", c, n.Commands, want),
				Fix: fmt.Sprintf("give all three the same count: kafka-topics --alter --topic <smaller> --partitions %d (only ever grow a topic before it holds data: growing moves keys)", max(c, want))})
		}
	}
	if c, ok := counts[n.Meta]; ok && c != 1 {
		problems = append(problems, Problem{Topic: n.Meta, What: fmt.Sprintf("has %d partitions, but the claims of consumer groups must sit in one partition so that every processor reads them in the same order", c),
			Fix: fmt.Sprintf("kafka-topics --delete --topic %s, then `chronicle topics %s --create` (it only records which group serves these topics; the next processor to start records its group again)", n.Meta, n.Prefix)})
	}
	var existing []string
	for _, t := range []string{n.Events, n.State, n.Meta} {
		if _, ok := counts[t]; ok {
			existing = append(existing, t)
		}
	}
	if len(existing) > 0 {
		rcs, err := adm.DescribeTopicConfigs(ctx, existing...)
		if err != nil {
			return 0, fmt.Errorf("describing configs of %v: %w", existing, err)
		}
		for _, rc := range rcs {
			if rc.Err != nil {
				return 0, fmt.Errorf("describing config of %s: %w", rc.Name, rc.Err)
			}
			policy := "delete"
			values := map[string]string{}
			for _, c := range rc.Configs {
				if c.Value != nil {
					values[c.Key] = *c.Value
				}
				if c.Key == "cleanup.policy" && c.Value != nil {
					policy = *c.Value
				}
			}
			if rc.Name == n.Meta {
				problems = append(problems, metaProblems(rc.Name, policy, values)...)
				continue
			}
			if policy != "compact" {
				problems = append(problems, Problem{Topic: rc.Name, What: fmt.Sprintf("cleanup.policy is %q, so Kafka would delete history by time or size", policy),
					Fix: fmt.Sprintf("kafka-configs --alter --entity-type topics --entity-name %s --add-config cleanup.policy=compact", rc.Name)})
			}
		}
	}
	if len(problems) > 0 {
		return 0, &InvalidError{Problems: problems}
	}
	return want, nil
}

// metaProblems checks that the meta topic keeps every claim forever: the
// order of the claims decides which group owns the topics, so neither
// retention nor compaction may remove one.
func metaProblems(topic, policy string, values map[string]string) []Problem {
	var problems []Problem
	if strings.Contains(policy, "compact") {
		problems = append(problems, Problem{Topic: topic, What: fmt.Sprintf("cleanup.policy is %q; compaction would remove group claims and could change which group owns the topics", policy),
			Fix: fmt.Sprintf("kafka-configs --alter --entity-type topics --entity-name %s --add-config cleanup.policy=delete,retention.ms=-1", topic)})
	}
	for _, key := range []string{"retention.ms", "retention.bytes"} {
		if v, ok := values[key]; key == "retention.ms" && !ok || ok && v != "-1" {
			if !ok {
				v = "the broker default"
			}
			problems = append(problems, Problem{Topic: topic, What: fmt.Sprintf("%s is %s, so Kafka would delete group claims", key, v),
				Fix: fmt.Sprintf("kafka-configs --alter --entity-type topics --entity-name %s --add-config %s=-1", topic, key)})
		}
	}
	return problems
}

// partitionCounts asks the brokers (bypassing the client's metadata cache,
// which would hide topics created a moment ago) how many partitions each
// existing topic has.
func partitionCounts(ctx context.Context, cl *kgo.Client, names []string) (map[string]int32, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range names {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	out := map[string]int32{}
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		switch err := kerr.ErrorForCode(t.ErrorCode); {
		case err == nil:
			out[*t.Topic] = int32(len(t.Partitions))
		case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.LeaderNotAvailable):
		default:
			return nil, fmt.Errorf("topic %s: %w", *t.Topic, err)
		}
	}
	return out, nil
}
