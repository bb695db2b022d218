package processor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/chronicle-es/chronicle/topics"
)

func TestGracefulShutdownCommitsAndHandsOver(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	names := topics.For("counters")
	createTopics(t, c, "counters", 6)
	s := counterStream(t, kind, names.Commands, 40, 25)
	cfg := testConfig(t, c, "graceful", Binding{Kind: kind, Prefix: "counters"})
	cfg.CommitInterval = 200 * time.Millisecond
	first := startProcessor(t, cfg)
	produceAll(t, newProducer(t, c), s.recs)
	waitResults(t, c, names.Results, 200, 30*time.Second)
	start := time.Now()
	first.stop(t)
	if took := time.Since(start); took > cfg.ShutdownTimeout+2*time.Second {
		t.Errorf("shutdown took %v, bound is %v", took, cfg.ShutdownTimeout)
	}
	handled := first.p.Stats().Commands
	// Everything the first instance handled is committed: its results are
	// readable now, before anyone else runs.
	if got := len(readAll(t, c, names.Results)); int64(got) != handled {
		t.Errorf("after shutdown %d results are committed, the instance handled %d", got, handled)
	}
	cfg.TransactionalID = "graceful-2"
	startProcessor(t, cfg)
	checkExactlyOnce(t, c, kind, names, s, 60*time.Second)
}

func TestRunRefusesTopicsThatDoNotFit(t *testing.T) {
	c := startCluster(t)
	adm := newAdmin(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, 3, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("delete")}, "counters.events"); err != nil {
		t.Fatal(err)
	}
	p, err := New(testConfig(t, c, "refuse", Binding{Kind: counterKind(), Prefix: "counters"}))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Run(ctx)
	if !errors.Is(err, topics.ErrInvalidTopics) || !strings.Contains(err.Error(), "cleanup.policy=compact") {
		t.Fatalf("Run: %v, want a topics error saying how to fix it", err)
	}
}

func TestConfigValidationReportsEveryProblem(t *testing.T) {
	_, err := New(Config{CommitEvery: -1, Partitions: -2})
	if err == nil {
		t.Fatal("New accepted an empty config")
	}
	for _, want := range []string{"no brokers", "no aggregate types", "partitions -2", "commit-every -1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
