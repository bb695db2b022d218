package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/topics"
)

func runTopics(ctx context.Context, args []string, s *session) int {
	fs := newFlags("topics", "topics PREFIX [--create] [flags]", s)
	var k kafkaFlags
	k.register(fs, "127.0.0.1:9092")
	create := fs.Bool("create", false, "create the missing topics (otherwise only check)")
	partitions := fs.Int("partitions", 6, "partitions of topics created")
	replication := fs.Int("replication-factor", -1, "replication factor of topics created; -1 lets the broker choose")
	pos, code, done := parseFlags(fs, args)
	if done {
		return code
	}
	if len(pos) != 1 {
		fs.Usage()
		return 2
	}
	opts, err := k.clientOptions()
	if err != nil {
		return fail(s, "topics", err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fail(s, "topics", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	names := topics.For(pos[0])
	var n int32
	if *create {
		n, err = topics.Ensure(ctx, cl, names, topics.Spec{Partitions: int32(*partitions), ReplicationFactor: int16(*replication)})
	} else {
		n, err = topics.Check(ctx, cl, names)
	}
	if err != nil {
		return fail(s, "topics", err)
	}
	for _, t := range names.All() {
		fmt.Fprintf(s.out, "%-24s ok\n", t)
	}
	fmt.Fprintf(s.out, "%d partitions; events and state compacted\n", n)
	return 0
}
