package account_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/internal/proctest"
	"github.com/chronicle-es/chronicle/topics"
)

// TestTheServiceAsAUserRunsIt builds cmd/accounts and drives it as the
// README does: an older release's events (Deposited version 1) are in the
// broker's data, then `accounts dev` serves the account type on them, and
// the user sends commands, tails and reads history.
func TestTheServiceAsAUserRunsIt(t *testing.T) {
	bin := proctest.Build(t, "./cmd/accounts", "accounts")
	run := func(args ...string) (string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatalf("accounts %v: %v", args, err)
		}
		return string(out), 0
	}
	addr, dataDir := proctest.FreeAddr(t), t.TempDir()

	// The release before Deposited version 2 left events in Kafka.
	broker := start(t, bin, "dev", "--broker-only", "--kafka-addr", addr, "--data-dir", dataDir)
	if out, code := run("topics", "accounts", "--create", "--brokers", addr); code != 0 {
		t.Fatalf("topics accounts --create: exit %d\n%s", code, out)
	}
	writeLegacyAccount(t, addr, "acc-legacy-1")
	if err := broker.Stop(os.Interrupt); err != nil {
		t.Fatalf("accounts dev --broker-only: %v\n%s", err, broker.Output())
	}

	dev := start(t, bin, "dev", "--kafka-addr", addr, "--data-dir", dataDir, "--admin-addr", "off")
	dev.WaitFor(t, regexp.MustCompile(`Press Ctrl-C to stop\.`), 30*time.Second) // the last line of its banner
	if !strings.Contains(dev.Output(), "accounts (account)") {
		t.Errorf("dev does not serve the account type on accounts:\n%s", dev.Output())
	}
	send := func(id, typ, data string) (string, int) {
		t.Helper()
		return run("send", "--brokers", addr, "--wait", "accounts", id, typ, data)
	}
	for i, c := range []struct{ typ, data string }{
		{"Open", `{"owner":"ada","currency":"EUR"}`},
		{"Deposit", `{"amount_cents":2500}`},
		{"Withdraw", `{"amount_cents":1000}`},
	} {
		out, code := send("acc-ada-1", c.typ, c.data)
		if want := fmt.Sprintf("accepted  account.%s acc-ada-1 version %d", c.typ, i); code != 0 || !strings.Contains(out, want) {
			t.Fatalf("send %s: exit %d, want %q\n%s", c.typ, code, want, out)
		}
	}
	out, code := send("acc-ada-1", "Withdraw", `{"amount_cents":1501}`)
	if code != 1 || !strings.Contains(out, "insufficient_funds") || !strings.Contains(out, "withdrawing 1501 cents from a balance of 1500 cents would overdraw the account") {
		t.Fatalf("an overdraft: exit %d, want 1 and the reason\n%s", code, out)
	}

	if out, code := send("acc-bob-2", "Open", `{"owner":"bob","currency":"USD"}`); code != 0 {
		t.Fatalf("open acc-bob-2: exit %d\n%s", code, out)
	}
	if out, code := send("acc-bob-2", "Deposit", `{"amount_cents":700,"currency":"EUR"}`); code != 1 || !strings.Contains(out, "currency_mismatch: the account is in USD, the deposit in EUR") {
		t.Fatalf("a deposit in another currency: exit %d, want 1 and the reason\n%s", code, out)
	}

	out, code = run("tail", "--brokers", addr, "accounts", "--from-beginning", "--aggregate", "acc-ada-1")
	for _, want := range []string{"acc-ada-1@0  account.Opened", `acc-ada-1@1  account.Deposited  {"amount_cents":2500,"currency":"EUR"}`, `acc-ada-1@2  account.Withdrawn  {"amount_cents":1000}`} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("tail: exit %d, lacks %q\n%s", code, want, out)
		}
	}
	out, code = run("history", "--brokers", addr, "accounts", "acc-ada-1", "--json")
	var doc struct {
		State struct {
			BalanceCents int64 `json:"balance_cents"`
		} `json:"state"`
		Version int64 `json:"version"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Version != 2 || doc.State.BalanceCents != 1500 {
		t.Errorf("history acc-ada-1: exit %d, want version 2 and 1500 cents\n%s", code, out)
	}

	// The version 1 event reads as version 2, through the upcaster, in
	// history and in the processor that decides on it.
	out, code = run("history", "--brokers", addr, "accounts", "acc-legacy-1")
	if code != 0 || !strings.Contains(out, `"amount_cents":1999`) || !strings.Contains(out, `"balance_cents": 1999`) {
		t.Errorf("history acc-legacy-1: exit %d, want the v1 deposit as 1999 cents\n%s", code, out)
	}
	if out, code := send("acc-legacy-1", "Withdraw", `{"amount_cents":2000}`); code != 1 || !strings.Contains(out, "balance of 1999 cents") {
		t.Errorf("withdrawing 2000 from the legacy account: exit %d, want a rejection at 1999 cents\n%s", code, out)
	}
	if out, code := send("acc-legacy-1", "Withdraw", `{"amount_cents":1999}`); code != 0 || !strings.Contains(out, "version 2") {
		t.Errorf("withdrawing 1999 from the legacy account: exit %d\n%s", code, out)
	}
}

// writeLegacyAccount writes, as the release before Deposited version 2
// did, an account opened with a deposit of 19.99 euros.
func writeLegacyAccount(t *testing.T, addr, id string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(topics.Partitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	part := topics.NewOwner().Of([]byte(id), 6) // topics --create makes 6
	opened := []byte(fmt.Sprintf(`{"specversion":"1.0","id":"01KAA0000000000000000000B0","source":"/chronicle/account","type":"account.Opened","subject":%q,"time":"2026-01-02T03:04:05Z","aggregatetype":"account","aggregateversion":0,"schemaversion":1,"data":{"owner":"grace","currency":"EUR"}}`, id))
	deposited := eventDoc(id, 1, 1, `{"amount":19.99}`)
	events := topics.For("accounts").Events
	if err := cl.ProduceSync(ctx,
		&kgo.Record{Topic: events, Partition: part, Key: topics.EventKey(id, 0), Value: opened},
		&kgo.Record{Topic: events, Partition: part, Key: topics.EventKey(id, 1), Value: deposited},
	).FirstErr(); err != nil {
		t.Fatalf("writing the legacy events: %v", err)
	}
}

var kafkaAddrLine = regexp.MustCompile(`kafka:\s+127\.0\.0\.1:\d+`)

// start runs bin with args until it prints its Kafka address; the test's
// end stops it.
func start(t *testing.T, bin string, args ...string) *proctest.Process {
	t.Helper()
	p := proctest.Start(t, exec.Command(bin, args...))
	p.WaitFor(t, kafkaAddrLine, time.Minute)
	return p
}
