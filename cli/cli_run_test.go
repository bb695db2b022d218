package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
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

	run := func(ctx context.Context, kafkaPass, redisURL string) (*exec.Cmd, *syncBuffer) {
		cmd := exec.CommandContext(ctx, binary(t), "run", "--brokers", brokers, "--sasl-mechanism", "SCRAM-SHA-256",
			"--sasl-user", "admin", "--redis", redisURL, "--transactional-id", "run-test", "--session-timeout", "6s", "--admin-addr", "127.0.0.1:0",
			"--aggregates", "orders=order", "--partitions", "3", "--log-level", "info")
		cmd.Env = append(os.Environ(), "CHRONICLE_SASL_PASSWORD="+kafkaPass)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, out
	}

	t.Run("wrong Kafka password fails fast", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		start := time.Now()
		cmd, out := run(ctx, "wrong", redisURL)
		err := cmd.Wait()
		if err == nil || ctx.Err() != nil {
			t.Fatalf("run with a wrong Kafka password: %v after %v\n%s", err, time.Since(start), out)
		}
		if !strings.Contains(strings.ToLower(out.String()), "sasl") && !strings.Contains(out.String(), "SASL") {
			t.Errorf("the error does not name SASL:\n%s", out)
		}
		if strings.Contains(out.String(), "wrong") && strings.Contains(out.String(), "password=wrong") {
			t.Errorf("the password appears in the output:\n%s", out)
		}
	})
	t.Run("wrong Redis password fails fast", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		bad := strings.Replace(redisURL, "s3cret-redis", "nope", 1)
		cmd, out := run(ctx, "s3cret-kafka", bad)
		if err := cmd.Wait(); err == nil || ctx.Err() != nil {
			t.Fatalf("run with a wrong Redis password: %v\n%s", err, out)
		}
		if !strings.Contains(out.String(), "redis") || strings.Contains(out.String(), "nope") {
			t.Errorf("want a Redis error without the password:\n%s", out)
		}
	})
	for i, tc := range []struct{ name, redisURL string }{
		{"right credentials process commands", redisURL},
		// Redis only speeds restores up: run starts without it.
		{"Redis down at start still processes commands", "redis://127.0.0.1:1/0"},
	} {
		t.Run(tc.name, func(t *testing.T) { runAndSend(t, run, c, tc.redisURL, fmt.Sprintf("o-sasl-%d", i)) })
	}
}

// runAndSend starts run and sends one CreateOrder through it.
func runAndSend(t *testing.T, run func(ctx context.Context, kafkaPass, redisURL string) (*exec.Cmd, *syncBuffer), c *kfake.Cluster, redisURL, orderID string) {
	{
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd, out := run(ctx, "s3cret-kafka", redisURL)
		defer func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run did not stop cleanly on SIGINT: %v\n%s", err, out)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("run did not stop within 30s of SIGINT\n%s", out)
			}
			if bytes.Contains([]byte(out.String()), []byte("s3cret")) {
				t.Errorf("a secret appears in the logs:\n%s", out)
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
				t.Fatalf("run did not create the topics: %v\n%s", err, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		defer scancel()
		res, err := prod.Send(sctx, "orders", cmdEnv)
		if err != nil || res.Status != aggregates.StatusAccepted {
			t.Fatalf("result %+v, %v\n%s", res, err, out)
		}
	}
}
