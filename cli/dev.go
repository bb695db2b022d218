package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/devstack"
)

const devSynopsis = `dev [flags]

Runs the whole stack in this one process, with nothing to install: an
embedded Kafka-protocol broker (franz-go's kfake) on --kafka-addr, an
embedded Redis (miniredis) for snapshots unless --redis is given, the topics
of every aggregate type, and the processor serving them. The broker keeps
its data in --data-dir between runs (--in-memory keeps nothing); one dev at
a time may use a data directory. Stop it with Ctrl-C. Not for production:
use run against a Kafka cluster.

Examples:
  {prog} dev
  {prog} dev --in-memory --kafka-addr 127.0.0.1:0 --admin-addr off
  {prog} dev --data-dir /tmp/other --kafka-addr 127.0.0.1:9093 --admin-addr 127.0.0.1:9401
  {prog} dev --aggregates {prefix}={kind} --verbose
  {prog} dev --broker-only --kafka-addr 127.0.0.1:9092`

func runDev(ctx context.Context, args []string, s *session) int {
	fs := newFlags("dev", devSynopsis, s)
	addr := fs.String("kafka-addr", "127.0.0.1:9092", "address of the embedded Kafka broker (127.0.0.1:<port>; port 0 picks a free one)")
	dataDir := fs.String("data-dir", filepath.Join(".chronicle", "kafka"), "directory keeping the broker's data between runs")
	inMemory := fs.Bool("in-memory", false, "keep nothing on disk")
	partitions := fs.Int("partitions", 6, "partitions of each topic created")
	aggs := fs.String("aggregates", s.kinds.defaultSpec(), "topic prefix=aggregate type pairs to serve")
	redisURL := fs.String("redis", "", "Redis URL for snapshots (redis://, rediss://); empty embeds an in-memory miniredis")
	verbose := fs.Bool("verbose", false, "log the processor's progress")
	var adm adminFlags
	adm.register(fs, "127.0.0.1:9400")
	brokerOnly := fs.Bool("broker-only", false, "run only the embedded Kafka broker: no Redis, no topics, no processor (--partitions, --aggregates, --redis and --verbose do not apply); "+
		"on SIGTERM or Ctrl-C it saves its data directory and exits, so it can be restarted on the same address and data")
	if _, code, done := parseFlags(fs, args); done {
		return code
	}
	store := *dataDir
	if *inMemory {
		store = "memory only"
	}
	if *brokerOnly {
		cfg := devstack.Config{
			KafkaAddr: *addr, DataDir: *dataDir, InMemory: *inMemory, BrokerOnly: true,
			Ready: func(brokers []string, _ string) {
				fmt.Fprintf(s.out, "%s dev is running (broker only)\n", s.name)
				fmt.Fprintf(s.out, "  kafka:      %s (embedded kfake, data: %s)\n", strings.Join(brokers, ","), store)
			},
		}
		if err := devstack.Run(ctx, cfg); err != nil {
			return fail(s, "dev", err)
		}
		fmt.Fprintf(s.out, "%s dev stopped\n", s.name)
		return 0
	}
	bindings, err := s.kinds.parseBindings(*aggs)
	if err != nil {
		return fail(s, "dev", err)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(s.err, &slog.HandlerOptions{Level: level, ReplaceAttr: durationsWithUnits}))
	routeRedisLogs(logger)
	observer, startAdmin, kafkaMetrics, err := adm.instrument(ctx, logger)
	if err != nil {
		return fail(s, "dev", err)
	}
	cfg := devstack.Config{
		KafkaAddr: *addr, DataDir: *dataDir, InMemory: *inMemory, Partitions: int32(*partitions),
		Aggregates: bindings, Logger: logger, RedisURL: *redisURL, Observer: observer, Started: startAdmin, SessionOptions: []kgo.Opt{kafkaMetrics},
		Ready: func(brokers []string, redisAddr string) {
			var prefixes []string
			for _, b := range bindings {
				prefixes = append(prefixes, fmt.Sprintf("%s (%s)", b.Prefix, b.Kind.Name()))
			}
			fmt.Fprintf(s.out, "%s dev is running\n", s.name)
			fmt.Fprintf(s.out, "  kafka:      %s (embedded kfake, data: %s)\n", strings.Join(brokers, ","), store)
			fmt.Fprintf(s.out, "  aggregates: %s\n", strings.Join(prefixes, ", "))
			if *redisURL == "" {
				fmt.Fprintf(s.out, "  snapshots:  embedded Redis (miniredis) on %s, in memory\n", redisAddr)
			} else {
				fmt.Fprintf(s.out, "  snapshots:  %s\n", redactURL(*redisURL))
			}
			if adm.listening != "off" {
				fmt.Fprintf(s.out, "  admin:      http://%s/metrics, /livez, /readyz\n", adm.listening)
			}
			fmt.Fprintf(s.out, "\nTry, in another terminal:\n")
			flag := ""
			if brokers[0] != "127.0.0.1:9092" { // the tools' default
				flag = " --brokers " + brokers[0]
			}
			self := invocation(s.name)
			b := bindings[0]
			_, id, typ, data := catalog{kinds: []aggregates.Kind{b.Kind}}.example()
			fmt.Fprintf(s.out, "  %s send%s --wait %s %s %s '%s'\n", self, flag, b.Prefix, id, typ, data)
			fmt.Fprintf(s.out, "  %s tail%s %s --from-beginning\n", self, flag, b.Prefix)
			fmt.Fprintf(s.out, "  %s history%s %s %s\n", self, flag, b.Prefix, id)
			fmt.Fprintf(s.out, "\nPress Ctrl-C to stop.\n")
		},
	}
	if err := devstack.Run(ctx, cfg); err != nil {
		return fail(s, "dev", err)
	}
	fmt.Fprintf(s.out, "%s dev stopped\n", s.name)
	return 0
}

// invocation is how the user ran this program, for the commands dev
// suggests: "go run ./cmd/chronicle" under go run (the main package's
// directory in its module), else os.Args[0] as typed, or name.
func invocation(name string) string {
	exe, err := os.Executable()
	if err != nil {
		return name
	}
	if strings.Contains(exe, string(filepath.Separator)+"go-build") {
		bi, ok := debug.ReadBuildInfo()
		if !ok || strings.HasSuffix(bi.Path, ".test") || !strings.HasPrefix(bi.Path, bi.Main.Path) {
			return name
		}
		if dir := strings.TrimPrefix(bi.Path, bi.Main.Path); dir != "" {
			return "go run ." + dir
		}
		return "go run ."
	}
	if len(os.Args) > 0 && filepath.Base(os.Args[0]) == name {
		return os.Args[0]
	}
	return name
}
