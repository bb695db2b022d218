package deploy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/internal/proctest"
	"github.com/chronicle-es/chronicle/metrics"
	"github.com/chronicle-es/chronicle/topics"
)

// absentWhenHealthy are the metrics of the contract that a healthy dev
// stack does not expose, with what makes them appear: a labelled series
// exists from its first observation on. The metrics package must still
// register each under its name and labels (TestTheMetricContractIsWhatTheMetricsPackageRegisters).
var absentWhenHealthy = map[string]string{
	"chronicle_checkpoint_age_seconds":          "a partition's first checkpoint",
	"chronicle_cache_evictions_total":           "a cache over --cache-size",
	"chronicle_snapshot_store_errors_total":     "a failed Redis call",
	"chronicle_snapshot_store_retries_total":    "a retried Redis call",
	"chronicle_snapshot_store_lease_lost_total": "a snapshot lease lost",
	"chronicle_partitions_paused":               "a partition restoring or stopped",
	"chronicle_foreign_writes_total":            "another writer in an events partition",
}

// kafkaClientPrefix names franz-go's client metrics (kprom), which are not
// Chronicle's contract.
const kafkaClientPrefix = "chronicle_kafka_"

// TestTheMetricContractIsWhatARunningProcessorExposes runs the image's
// binary as `chronicle dev`, sends it commands (accepted, rejected, one to
// the same order again, one undecodable record that goes to the DLQ) and
// reads its /metrics: every chronicle_* metric there is in the contract,
// with its type, its labels and their allowed values, and every metric of
// the contract is there, but those absentWhenHealthy.
func TestTheMetricContractIsWhatARunningProcessorExposes(t *testing.T) {
	bin := imageBinary(t)
	dev := proctest.Start(t, exec.Command(bin, "dev", "--in-memory", "--kafka-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"))
	brokers := dev.WaitFor(t, regexp.MustCompile(`kafka:\s+(127\.0\.0\.1:\d+)`), time.Minute)[1]
	admin := dev.WaitFor(t, regexp.MustCompile(`admin:\s+http://(127\.0\.0\.1:\d+)/`), 30*time.Second)[1]

	send := func(id, typ, data string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, _ := exec.CommandContext(ctx, bin, "send", "--brokers", brokers, "--wait", "orders", id, typ, data).CombinedOutput()
		if !bytes.Contains(out, []byte("accepted")) && !bytes.Contains(out, []byte("rejected")) {
			t.Fatalf("send %s %s: no result\n%s", id, typ, out)
		}
	}
	send("o-1", "CreateOrder", `{"user_id":"u-1"}`)
	send("o-1", "AddLine", `{"product_id":1,"quantity":1,"unit_price":100}`) // a cache hit
	send("o-2", "CreateOrder", `{}`)                                         // rejected
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topics.For("orders").Commands, Key: []byte("o-3"), Value: []byte("not a command")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	var families map[string]*dto.MetricFamily
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		families = scrape(t, "http://"+admin+"/metrics")
		if families["chronicle_dlq_records_total"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no chronicle_dlq_records_total a minute after an undecodable command\n%s", dev.Output())
		}
	}

	for name, f := range families {
		if !strings.HasPrefix(name, "chronicle_") || strings.HasPrefix(name, kafkaClientPrefix) {
			continue
		}
		spec, ok := chronicleMetrics[name]
		if !ok {
			t.Errorf("the processor exposes %s, which the contract (deploy/metrics_test.go) lacks", name)
			continue
		}
		if want := specType(spec.kind); f.GetType() != want {
			t.Errorf("%s is a %v, the contract says %v", name, f.GetType(), want)
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName())
				if allowed, enumerated := spec.values[lp.GetName()]; enumerated && !slices.Contains(allowed, lp.GetValue()) {
					t.Errorf("%s{%s=%q}: the contract allows only %v", name, lp.GetName(), lp.GetValue(), allowed)
				}
			}
			if !sameSet(labels, spec.labels) {
				t.Errorf("%s has labels %v, the contract says %v", name, labels, spec.labels)
				break
			}
		}
	}
	for name := range chronicleMetrics {
		if _, absent := absentWhenHealthy[name]; families[name] == nil && !absent {
			t.Errorf("the contract lists %s, which the processor does not expose", name)
		}
	}
	for name := range absentWhenHealthy {
		if _, ok := chronicleMetrics[name]; !ok {
			t.Errorf("absentWhenHealthy lists %s, which the contract lacks", name)
		}
	}
	if t.Failed() {
		t.Logf("exposed: %v", sortedKeys(families))
	}
}

// TestTheMetricContractIsWhatTheMetricsPackageRegisters reads the name and
// variable labels of every collector metrics.New registers: each is in the
// contract with those labels, and each metric of the contract is
// registered, so that those absentWhenHealthy cannot drift either.
func TestTheMetricContractIsWhatTheMetricsPackageRegisters(t *testing.T) {
	var reg recordingRegisterer
	if _, err := metrics.New(&reg); err != nil {
		t.Fatal(err)
	}
	ch := make(chan *prometheus.Desc, 100)
	go func() {
		for _, c := range reg.collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	descRe := regexp.MustCompile(`fqName: "([^"]+)".*constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}`)
	registered := map[string]bool{}
	for d := range ch {
		m := descRe.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the descriptor %s", d)
		}
		name, labels := m[1], splitLabels(m[3])
		for _, cl := range splitLabels(m[2]) {
			labels = append(labels, strings.SplitN(cl, "=", 2)[0])
		}
		registered[name] = true
		spec, ok := chronicleMetrics[name]
		if !ok {
			t.Errorf("metrics.New registers %s, which the contract lacks", name)
		} else if !sameSet(labels, spec.labels) {
			t.Errorf("metrics.New registers %s with labels %v, the contract says %v", name, labels, spec.labels)
		}
	}
	for name := range chronicleMetrics {
		if !registered[name] {
			t.Errorf("the contract lists %s, which metrics.New does not register", name)
		}
	}
}

// recordingRegisterer keeps the collectors registered with it.
type recordingRegisterer struct{ collectors []prometheus.Collector }

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	r.collectors = append(r.collectors, cs...)
}

func (r *recordingRegisterer) Unregister(prometheus.Collector) bool { return false }

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing %s: %v\n%s", url, err, body)
	}
	return families
}

func specType(k metricKind) dto.MetricType {
	switch k {
	case counter:
		return dto.MetricType_COUNTER
	case gauge:
		return dto.MetricType_GAUGE
	case histogram:
		return dto.MetricType_HISTOGRAM
	}
	panic(fmt.Sprintf("metric kind %d", k))
}

func splitLabels(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(a, b)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
