package cli

import (
	"fmt"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/internal/promtest"
)

// TestPrometheusScrapesARunningDev: a real Prometheus server scrapes a
// running `chronicle dev` (a process, as a user starts it) while commands
// are sent with `send --wait`; a PromQL query through Prometheus's HTTP API
// then counts exactly the commands sent, by outcome.
func TestPrometheusScrapesARunningDev(t *testing.T) {
	promtest.Tool(t, "prometheus") // skips before the work when it is missing
	d := startDev(t, "--kafka-addr", "127.0.0.1:0", "--in-memory")
	admin := d.WaitFor(t, adminLine, 30*time.Second)[1]
	prom := promtest.Start(t, admin)

	const sent, rejectEvery = 12, 4
	for i := range sent {
		data, wantCode := `{"user_id":"u-1"}`, 0
		if i%rejectEvery == rejectEvery-1 {
			data, wantCode = `{}`, 1 // rejected: invalid_user
		}
		out, errOut, code := chronicle(t, "", "send", "--brokers", d.brokers, "--wait", "orders", fmt.Sprintf("o-prom-%d", i), "CreateOrder", data)
		if code != wantCode {
			t.Fatalf("send %d: exit %d, want %d\n%s%s", i, code, wantCode, out, errOut)
		}
	}
	prom.Await(t, `sum(chronicle_commands_total{aggregate_type="order", command_type="order.CreateOrder"})`, sent, time.Minute)
	prom.Await(t, `sum(chronicle_commands_total{outcome="rejected"})`, sent/rejectEvery, 10*time.Second)
	prom.Await(t, `sum(chronicle_consumer_lag{aggregate_type="order"})`, 0, 10*time.Second)
	prom.Await(t, `chronicle_ready`, 1, 10*time.Second)
}
