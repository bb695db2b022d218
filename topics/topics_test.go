package topics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func cluster(t *testing.T) *kgo.Client {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func TestEnsureCreatesFittingTopics(t *testing.T) {
	cl := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := Ensure(ctx, cl, For("orders"), Spec{Partitions: 4, ReplicationFactor: 1})
	if err != nil || n != 4 {
		t.Fatalf("Ensure: %d, %v", n, err)
	}
	// A second call only checks.
	if n, err := Ensure(ctx, cl, For("orders"), Spec{Partitions: 9, ReplicationFactor: 1}); err != nil || n != 4 {
		t.Fatalf("second Ensure: %d, %v", n, err)
	}
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, "orders.events", "orders.state")
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range rcs {
		policy := ""
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil {
				policy = *c.Value
			}
		}
		if policy != "compact" {
			t.Errorf("%s cleanup.policy = %q, want compact", rc.Name, policy)
		}
	}
}

func TestCheckSaysWhatIsWrongAndHowToFixIt(t *testing.T) {
	cl := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	n := For("bad")
	mustCreate := func(topic string, parts int32, cfg map[string]*string) {
		if _, err := adm.CreateTopic(ctx, parts, 1, cfg, topic); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(n.Commands, 6, nil)
	mustCreate(n.Events, 3, nil) // wrong count and not compacted
	mustCreate(n.State, 6, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")})
	mustCreate(n.Results, 6, nil)
	_, err := Check(ctx, cl, n)
	if !errors.Is(err, ErrInvalidTopics) {
		t.Fatalf("Check: %v, want ErrInvalidTopics", err)
	}
	var inv *InvalidError
	if !errors.As(err, &inv) || len(inv.Problems) != 4 {
		t.Fatalf("problems: %v", err)
	}
	for _, want := range []string{"bad.dlq: does not exist", "bad.meta: does not exist", "bad.events: has 3 partitions but bad.commands has 6", "cleanup.policy=compact"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// Ensure creates what is missing but refuses what it cannot fix.
	if _, err := Ensure(ctx, cl, n, Spec{Partitions: 6, ReplicationFactor: 1}); !errors.Is(err, ErrInvalidTopics) {
		t.Fatalf("Ensure over mismatched topics: %v", err)
	}
}

func TestOwnerMatchesTheDefaultPartitioner(t *testing.T) {
	o := NewOwner()
	p := Partitioner().ForTopic("x")
	for i := range 2000 {
		key := []byte("order-" + string(rune('a'+i%26)) + string(rune(i)))
		r := &kgo.Record{Key: key, Partition: -1}
		if got, want := o.Of(key, 12), int32(p.Partition(r, 12)); got != want {
			t.Fatalf("owner of %q is %d, hashed partition %d", key, got, want)
		}
	}
	// Java client reference values: murmur2 of these keys mod 12.
	for key, want := range map[string]int32{"o-42": javaMurmur2Mod("o-42", 12)} {
		if got := o.Of([]byte(key), 12); got != want {
			t.Errorf("owner of %q = %d, want %d", key, got, want)
		}
	}
	r := &kgo.Record{Key: []byte("anything"), Partition: 3}
	if got := p.Partition(r, 12); got != 3 {
		t.Errorf("explicit partition 3 was moved to %d", got)
	}
}

// javaMurmur2Mod is Kafka's Utils.murmur2 & 0x7fffffff mod n, written out
// from the Java source as an independent reference.
func javaMurmur2Mod(key string, n int32) int32 {
	data := []byte(key)
	const seed, m, r = uint32(0x9747b28c), uint32(0x5bd1e995), 24
	length := len(data)
	h := seed ^ uint32(length)
	for i := 0; i+4 <= length; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := length &^ 3
	switch length % 4 {
	case 3:
		h ^= uint32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[tail])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h&0x7fffffff) % n
}

func TestEventKeySortsByVersion(t *testing.T) {
	if got := string(EventKey("o-42", 3)); got != "o-42@00000000000000000003" {
		t.Fatalf("EventKey = %q", got)
	}
	if string(EventKey("a", 9)) >= string(EventKey("a", 10)) {
		t.Fatal("keys do not sort by version")
	}
}
