package metrics_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/chronicle-es/chronicle/admin"
	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/internal/promtest"
	"github.com/chronicle-es/chronicle/metrics"
	"github.com/chronicle-es/chronicle/processor"
)

// TestPrometheusScrapesTheCommandsSent runs a processor with its admin
// server, a real Prometheus server scraping it, and asks Prometheus, through
// its HTTP API, how many commands were handled.
func TestPrometheusScrapesTheCommandsSent(t *testing.T) {
	promtest.Tool(t, "prometheus") // skips before the work when it is missing
	c := kafkatest.Start(t)
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := processor.New(processor.Config{
		Brokers: c.ListenAddrs(), Group: "metrics-test", TransactionalID: "metrics-1", Observer: m,
		SessionOptions: []kgo.Opt{kgo.WithHooks(kprom.NewMetrics("chronicle_kafka", kprom.Registerer(reg)))},
		Aggregates:     []processor.Binding{{Kind: order.Definition(), Prefix: "orders"}}, Partitions: 3,
		CommitInterval: 20 * time.Millisecond, SessionTimeout: 3 * time.Second, RebalanceTimeout: 3 * time.Second,
		TransactionTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Watch(p)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, err := admin.Start(ctx, admin.Config{Addr: "127.0.0.1:0", Gatherer: reg, Readiness: p.Readiness})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + srv.Addr()
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("not running")) {
		t.Fatalf("/readyz before Run: %d %s, want 503 saying it is not running", code, body)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })
	waitFor(t, "ready", func() bool { code, _ := get(t, base+"/readyz"); return code == http.StatusOK })

	prod, err := client.NewProducer(client.ProducerConfig{Kafka: client.Kafka{Brokers: c.ListenAddrs()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	const sent = 25
	kind := order.Definition()
	for i := range sent {
		var payload any = order.CreateOrder{UserID: "u-1"}
		if i%5 == 4 {
			payload = order.CreateOrder{} // rejected: invalid_user
		}
		cmd, err := kind.NewCommand(fmt.Sprintf("o-%d", i), payload, aggregates.Metadata{})
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = prod.Send(sctx, "orders", cmd)
		scancel()
		if err != nil {
			t.Fatal(err)
		}
	}

	// promtool accepts the exposition.
	_, exposition := get(t, base+"/metrics")
	if !bytes.Contains(exposition, []byte("chronicle_kafka_")) {
		t.Errorf("no franz-go client metrics (chronicle_kafka_*) in the exposition")
	}
	// franz-go's kprom names two gauges *_total, which promtool's lint
	// refuses; ours are checked without them.
	var ours bytes.Buffer
	for _, line := range bytes.SplitAfter(exposition, []byte("\n")) {
		if !bytes.Contains(line, []byte("chronicle_kafka_")) {
			ours.Write(line)
		}
	}
	promtest.CheckMetrics(t, ours.Bytes())

	// A real Prometheus scrapes it.
	prom := promtest.Start(t, srv.Addr())
	prom.Await(t, `sum(chronicle_commands_total{aggregate_type="order"})`, sent, time.Minute)
	prom.Await(t, `sum(chronicle_commands_total{outcome="rejected"})`, sent/5, 10*time.Second)
	prom.Await(t, `chronicle_ready`, 1, 10*time.Second)
	prom.Await(t, `chronicle_build_info{goversion="`+runtime.Version()+`"}`, 1, 10*time.Second)
}

func get(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after 60s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The processor gives SessionOptions to one client at a time, a new one
// after a failed session: kprom's hooks must survive that sequence (they
// register their collectors per client and unregister them on close).
func TestKpromHooksSurviveASessionRestart(t *testing.T) {
	c := kafkatest.Start(t)
	reg := prometheus.NewRegistry()
	hooks := kgo.WithHooks(kprom.NewMetrics("chronicle_kafka", kprom.Registerer(reg)))
	for range 3 {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), hooks)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		cl.Close()
	}
}
