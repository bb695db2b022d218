package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/chronicle-es/chronicle/admin"
	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/client"
	"github.com/chronicle-es/chronicle/metrics"
	"github.com/chronicle-es/chronicle/processor"
)

// needProm returns the path of a Prometheus tool, skipping the test when it
// is missing unless CHRONICLE_TEST_REQUIRE_PROMETHEUS is set (CI sets it).
func needProm(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CHRONICLE_TEST_REQUIRE_PROMETHEUS") != "" {
			t.Fatalf("%s is not installed (apt-get install prometheus) and CHRONICLE_TEST_REQUIRE_PROMETHEUS is set", name)
		}
		t.Skipf("%s is not installed: apt-get install prometheus", name)
	}
	return path
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestPrometheusScrapesTheCommandsSent runs a processor with its admin
// server, a real Prometheus server scraping it, and asks Prometheus, through
// its HTTP API, how many commands were handled.
func TestPrometheusScrapesTheCommandsSent(t *testing.T) {
	promBin := needProm(t, "prometheus")
	promtool := needProm(t, "promtool")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
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
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = &ours
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}

	// A real Prometheus scrapes it.
	dir := t.TempDir()
	promAddr := freeAddr(t)
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: chronicle\n    static_configs:\n      - targets: [%q]\n", srv.Addr())
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var promOut bytes.Buffer
	prom := exec.Command(promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr)
	prom.Stdout, prom.Stderr = &promOut, &promOut
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prom.Process.Kill(); prom.Wait() })
	query := `sum(chronicle_commands_total{aggregate_type="order"})`
	var got float64
	deadline := time.Now().Add(60 * time.Second)
	for {
		got = promQuery(t, "http://"+promAddr, query)
		if got == sent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus answers %s = %v, want %d\n%s", query, got, sent, promOut.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if rejected := promQuery(t, "http://"+promAddr, `sum(chronicle_commands_total{outcome="rejected"})`); rejected != sent/5 {
		t.Errorf("rejected = %v, want %d", rejected, sent/5)
	}
	if ready := promQuery(t, "http://"+promAddr, `chronicle_ready`); ready != 1 {
		t.Errorf("chronicle_ready = %v, want 1", ready)
	}
	if build := promQuery(t, "http://"+promAddr, `chronicle_build_info{goversion="`+runtime.Version()+`"}`); build != 1 {
		t.Errorf("chronicle_build_info{goversion=%q} = %v, want 1", runtime.Version(), build)
	}
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

// promQuery runs an instant query and returns its single value, or -1.
func promQuery(t *testing.T, base, q string) float64 {
	t.Helper()
	_, body := get(t, base+"/api/v1/query?query="+url.QueryEscape(q))
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &r) != nil || len(r.Data.Result) != 1 {
		return -1
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return -1
	}
	return v
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
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
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
