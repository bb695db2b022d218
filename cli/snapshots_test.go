package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/internal/redistest"
	"github.com/chronicle-es/chronicle/internal/syncbuf"
)

// The wallet of this test exists twice: as released, and as the next
// release changed its Credited apply function (a fee per credit) without
// bumping StateSchema. Snapshots the released code wrote are then wrong
// for the new code, which `snapshots verify` must say before it ships.
type (
	walletState struct {
		Cents int64 `json:"cents"`
	}
	walletCredit   struct{ Cents int64 }
	walletCredited struct{ Cents int64 }
)

func walletDefinition(apply func(*walletState, walletCredited)) *aggregates.Definition[walletState] {
	return aggregates.MustDefine("wallet",
		aggregates.When("Credited", apply),
		aggregates.Handle("Credit", func(_ walletState, c walletCredit) ([]any, error) { return []any{walletCredited(c)}, nil }),
	)
}

func TestSnapshotsVerifyFindsDriftAndReportsNoneOnAHealthyStore(t *testing.T) {
	released := walletDefinition(func(s *walletState, e walletCredited) { s.Cents += e.Cents })
	changed := walletDefinition(func(s *walletState, e walletCredited) { s.Cents += e.Cents - 1 })
	c := kafkatest.Start(t)
	brokers := c.ListenAddrs()[0]
	redisURL := redistest.Start(t).URL()
	app := func(kind aggregates.Kind, out, errOut *syncbuf.Buffer) *App {
		return &App{Kinds: []aggregates.Kind{kind}, Name: "wallets", Stdin: strings.NewReader(""), Stdout: out, Stderr: errOut}
	}
	cli := func(kind aggregates.Kind, args ...string) (string, string, int) {
		var out, errOut syncbuf.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		code := app(kind, &out, &errOut).Run(ctx, args)
		return out.String(), errOut.String(), code
	}

	if out, errOut, code := cli(released, "topics", "wallets", "--create", "--partitions", "3", "--brokers", brokers); code != 0 {
		t.Fatalf("topics --create: exit %d\n%s%s", code, out, errOut)
	}
	// The released code runs with snapshots and handles credits.
	var runOut, runErr syncbuf.Buffer
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan int, 1)
	go func() {
		ran <- app(released, &runOut, &runErr).Run(ctx, []string{"run", "--brokers", brokers, "--aggregates", "wallets=wallet", "--redis", redisURL,
			"--admin-addr", "off", "--transactional-id", "wallets-1", "--partitions", "3", "--session-timeout", "3s", "--commit-interval", "20ms", "--log-level", "warn"})
	}()
	t.Cleanup(stop)
	for i := range 6 {
		id := fmt.Sprintf("w-%d", i)
		for range i%2 + 1 {
			if out, errOut, code := cli(released, "send", "--brokers", brokers, "--wait", "wallets", id, "Credit", `{"Cents":250}`); code != 0 {
				t.Fatalf("send: exit %d\n%s%s\nrun: %s", code, out, errOut, runErr.String())
			}
		}
	}
	stop() // a graceful stop checkpoints every partition
	select {
	case code := <-ran:
		if code != 0 {
			t.Fatalf("run: exit %d\n%s", code, runErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30s")
	}

	out, errOut, code := cli(released, "snapshots", "verify", "wallets", "--all", "--brokers", brokers, "--redis", redisURL)
	if code != 0 || !strings.Contains(out, "6 aggregates, 6 snapshots compared") || !strings.Contains(out, "no drift") {
		t.Fatalf("verify with the released code: exit %d, want 0, 6 snapshots compared and no drift\n%s%s", code, out, errOut)
	}

	out, errOut, code = cli(changed, "snapshots", "verify", "wallets", "--all", "--brokers", brokers, "--redis", redisURL)
	if code != 1 {
		t.Fatalf("verify with the changed apply function: exit %d, want 1\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		`drift: aggregate "w-1"`, "snapshot at version 1", "differs from the replay at version 1", "state.cents: snapshot 500, replay 498",
		`drift: aggregate "w-0"`, "state.cents: snapshot 250, replay 249",
		"6 snapshots disagree", "bump StateSchema",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}

	// One aggregate, and one that does not exist.
	out, errOut, code = cli(changed, "snapshots", "verify", "wallets", "--id", "w-3", "--id", "w-nobody", "--brokers", brokers, "--redis", redisURL)
	if code != 1 || strings.Count(out, "drift:") != 1 || !strings.Contains(out, `aggregate "w-3"`) || !strings.Contains(out, "not found (no events and no snapshot on wallets): w-nobody") {
		t.Errorf("verify --id w-3 --id w-nobody: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = cli(released, "snapshots", "verify", "wallets", "--sample", "2", "--brokers", brokers, "--redis", redisURL)
	if code != 0 || !strings.Contains(out, "2 aggregates, 2 snapshots compared") {
		t.Errorf("verify --sample 2: exit %d\n%s%s", code, out, errOut)
	}
	// Usage errors.
	for _, args := range [][]string{
		{"snapshots", "verify", "wallets", "--redis", redisURL},
		{"snapshots", "verify", "wallets", "--all", "--sample", "3", "--redis", redisURL},
		{"snapshots", "verify", "wallets", "--all"},
		{"snapshots", "check"},
	} {
		if _, errOut, code := cli(released, args...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d, want 2 and a message\n%s", args, code, errOut)
		}
	}
}
