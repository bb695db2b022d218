package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/internal/proctest"
	"github.com/chronicle-es/chronicle/internal/redistest"
	"github.com/chronicle-es/chronicle/topics"
)

// TestRunWithSASLAndRedisAuth runs the production service against a
// SASL-protected broker and a password-protected redis-server.
func TestRunWithSASLAndRedisAuth(t *testing.T) {
	c := kafkatest.Start(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "admin", "s3cret-kafka"))
	rs := redistest.Start(t, redistest.WithPassword("s3cret-redis"))
	brokers := strings.Join(c.ListenAddrs(), ",")
	redisURL := rs.URL()
	if !strings.Contains(redisURL, "s3cret-redis") {
		t.Fatalf("redis URL %q carries no password", redisURL)
	}

	run := func(t *testing.T, kafkaPass, redisURL string) *proctest.Process {
		cmd := exec.Command(binary(t), "run", "--brokers", brokers, "--sasl-mechanism", "SCRAM-SHA-256",
			"--sasl-user", "admin", "--redis", redisURL, "--transactional-id", "run-test", "--session-timeout", "6s", "--admin-addr", "127.0.0.1:0",
			"--aggregates", "orders=order", "--partitions", "3", "--log-level", "info")
		cmd.Env = append(os.Environ(), "CHRONICLE_SASL_PASSWORD="+kafkaPass)
		return proctest.Start(t, cmd)
	}
	// exited waits for p to exit on its own (a minute at most: a hang
	// guard) and returns how.
	exited := func(t *testing.T, p *proctest.Process) error {
		t.Helper()
		select {
		case <-p.Exited():
			return p.Err()
		case <-time.After(time.Minute):
			t.Fatalf("run still runs after a minute\n%s", p.Output())
			return nil
		}
	}

	t.Run("wrong Kafka password fails fast", func(t *testing.T) {
		p := run(t, "wrong", redisURL)
		out := p.Output
		if err := exited(t, p); err == nil {
			t.Fatalf("run with a wrong Kafka password exited 0\n%s", out())
		}
		if !strings.Contains(strings.ToLower(out()), "sasl") {
			t.Errorf("the error does not name SASL:\n%s", out())
		}
		if strings.Contains(out(), "password=wrong") {
			t.Errorf("the password appears in the output:\n%s", out())
		}
	})
	t.Run("wrong Redis password fails fast", func(t *testing.T) {
		bad := strings.Replace(redisURL, "s3cret-redis", "nope", 1)
		p := run(t, "s3cret-kafka", bad)
		if err := exited(t, p); err == nil {
			t.Fatalf("run with a wrong Redis password exited 0\n%s", p.Output())
		}
		if out := p.Output(); !strings.Contains(out, "redis") || strings.Contains(out, "nope") {
			t.Errorf("want a Redis error without the password:\n%s", out)
		}
	})
	for i, tc := range []struct {
		name, redisURL string
		redisDown      bool
	}{
		{"right credentials process commands", redisURL, false},
		// Redis only speeds restores up: run starts without it.
		{"Redis down at start still processes commands", "redis://127.0.0.1:1/0", true},
	} {
		t.Run(tc.name, func(t *testing.T) { runAndSend(t, run, c, tc.redisURL, fmt.Sprintf("o-sasl-%d", i), tc.redisDown) })
	}
}

// goRedisDefault matches a line of go-redis's default logger.
var goRedisDefault = regexp.MustCompile(`(?m)^redis: \d{4}/\d\d/\d\d `)

// runAndSend starts run and sends one CreateOrder through it. With Redis
// down, go-redis logs its failed dials.
func runAndSend(t *testing.T, run func(t *testing.T, kafkaPass, redisURL string) *proctest.Process, c *kfake.Cluster, redisURL, orderID string, redisDown bool) {
	{
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := run(t, "s3cret-kafka", redisURL)
		out := p.Output
		defer func() {
			if err := p.Stop(os.Interrupt); err != nil {
				t.Errorf("run on SIGINT: %v\n%s", err, out())
			}
			if strings.Contains(out(), "s3cret") {
				t.Errorf("a secret appears in the logs:\n%s", out())
			}
			// go-redis's own lines (its failed dials) come through run's logger.
			if goRedisDefault.MatchString(out()) {
				t.Errorf("go-redis printed its own log lines, not through run's logger:\n%s", out())
			}
			if redisDown && !strings.Contains(out(), `"msg":"connection pool: failed to dial`) {
				t.Errorf("run's log has no go-redis line about the failed dials:\n%s", out())
			}
		}()
		k := client.Kafka{Brokers: c.ListenAddrs(), Options: []kgo.Opt{kgo.SASL(scram.Auth{User: "admin", Pass: "s3cret-kafka"}.AsSha256Mechanism())}}
		prod, err := client.NewProducer(client.ProducerConfig{Kafka: k})
		if err != nil {
			t.Fatal(err)
		}
		defer prod.Close()
		cmdEnv, err := order.Definition().NewCommand(orderID, order.CreateOrder{UserID: "u-1"}, aggregates.Metadata{})
		if err != nil {
			t.Fatal(err)
		}
		// Wait for run to create the topics, then send once.
		kcl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.Brokers...)}, k.Options...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer kcl.Close()
		deadline := time.Now().Add(40 * time.Second)
		for {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := topics.Check(cctx, kcl, topics.For("orders"))
			ccancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("run did not create the topics: %v\n%s", err, out())
			}
			time.Sleep(100 * time.Millisecond)
		}
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		defer scancel()
		res, err := prod.Send(sctx, "orders", cmdEnv)
		if err != nil || res.Status != aggregates.StatusAccepted {
			t.Fatalf("result %+v, %v\n%s", res, err, out())
		}
	}
}
