package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/processor"
	"github.com/chronicle-es/chronicle/snapshots"
	"github.com/chronicle-es/chronicle/topics"
)

func runStatus(ctx context.Context, args []string, s *session) int {
	fs := newFlags("status", "status PREFIX... [flags]", s)
	var k kafkaFlags
	k.register(fs, "127.0.0.1:9092")
	group := fs.String("group", "", "consumer group (default: the group the topics remember serving them)")
	redisURL := fs.String("redis", "", "Redis URL of the snapshot store, to show each partition's last checkpoint")
	admins := fs.String("admin", "", "comma-separated admin addresses (host:port) of the instances, to show why partitions are not ready")
	aggs := fs.String("aggregates", s.kinds.defaultSpec(), "topic prefix=aggregate type pairs (the snapshot store keys checkpoints by aggregate type)")
	pos, code, done := parseFlags(fs, args)
	if done {
		return code
	}
	if len(pos) == 0 {
		fs.Usage()
		return 2
	}
	opts, err := k.clientOptions()
	if err != nil {
		return fail(s, "status", err)
	}
	bindings, err := s.kinds.parseBindings(*aggs)
	if err != nil {
		return fail(s, "status", err)
	}
	typeOf := map[string]string{}
	for _, b := range bindings {
		typeOf[b.Prefix] = b.Kind.Name()
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fail(s, "status", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var store *snapshots.Redis
	if *redisURL != "" {
		if store, err = snapshots.Open(*redisURL); err != nil {
			return fail(s, "status", err)
		}
		defer store.Close()
	}
	for _, prefix := range pos {
		if err := printStatus(ctx, s, cl, opts, topics.For(prefix), typeOf[prefix], *group, store); err != nil {
			return fail(s, "status", err)
		}
	}
	if *admins != "" {
		printReadiness(ctx, s, strings.Split(*admins, ","))
	}
	return 0
}

// printStatus prints one aggregate type's partitions: owner, lag, last
// checkpoint.
func printStatus(ctx context.Context, s *session, cl *kgo.Client, opts []kgo.Opt, names topics.Names, kindName, group string, store *snapshots.Redis) error {
	adm := kadm.NewClient(cl)
	own, err := topics.GroupOwner(ctx, cl, names)
	if err != nil {
		return fmt.Errorf("reading which group serves %q: %w", names.Prefix, err)
	}
	if group == "" {
		group = own.Group
	}
	if group == "" {
		return fmt.Errorf("no group serves the topics of %q yet; start `chronicle run`, or pass --group", names.Prefix)
	}
	td, err := adm.ListTopics(ctx, names.Commands)
	if err != nil || td[names.Commands].Err != nil {
		return fmt.Errorf("describing %s: %w", names.Commands, errors.Join(err, td[names.Commands].Err))
	}
	owners := map[int32]string{}
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return fmt.Errorf("describing group %q: %w", group, err)
	}
	for _, g := range described {
		for _, m := range g.Members {
			ca, ok := m.Assigned.AsConsumer()
			if !ok {
				continue
			}
			for _, t := range ca.Topics {
				if t.Topic != names.Commands {
					continue
				}
				for _, p := range t.Partitions {
					owners[p] = fmt.Sprintf("%s (%s)", m.ClientID, m.ClientHost)
				}
			}
		}
	}
	lag, err := processor.GroupLag(ctx, opts, group, names.Commands)
	if err != nil {
		return err
	}
	since := ""
	if own.Group == group {
		since = ", since " + own.Since.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(s.out, "%s: group %s%s, %d partitions\n", names.Prefix, group, since, len(td[names.Commands].Partitions))
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tOWNER\tLAG\tCHECKPOINT\tAGE")
	parts := td[names.Commands].Partitions.Numbers()
	slices.Sort(parts)
	for _, p := range parts {
		owner := owners[p]
		if owner == "" {
			owner = "-"
		}
		cp, age := "-", "-"
		if store != nil {
			if kindName != "" {
				c, ok, err := store.Checkpoint(ctx, kindName, p)
				switch {
				case err != nil:
					cp = "error: " + err.Error()
				case ok:
					cp = fmt.Sprintf("offset %d", c.Offset)
					age = time.Since(c.Time).Round(time.Second).String()
				}
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", p, owner, lag[names.Commands][p], cp, age)
	}
	return tw.Flush()
}

// printReadiness asks each instance's /readyz and prints why it is not
// ready: restoring or stopped partitions, with the reason.
func printReadiness(ctx context.Context, s *session, addrs []string) {
	fmt.Fprintln(s.out, "instances:")
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a+"/readyz", nil)
		if err != nil {
			fmt.Fprintf(s.out, "  %s: %v\n", a, err)
			continue
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Fprintf(s.out, "  %s: unreachable: %v\n", a, err)
			continue
		}
		var r struct {
			Ready   bool     `json:"ready"`
			Reasons []string `json:"reasons"`
		}
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		switch {
		case err != nil:
			fmt.Fprintf(s.out, "  %s: unreadable /readyz: %v\n", a, err)
		case r.Ready:
			fmt.Fprintf(s.out, "  %s: ready\n", a)
		default:
			fmt.Fprintf(s.out, "  %s: not ready\n", a)
			for _, why := range r.Reasons {
				fmt.Fprintf(s.out, "    %s\n", why)
			}
		}
	}
}
