package account_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/aggregatetest"
	"github.com/chronicle-es/chronicle/examples/account"
)

func fixture(t *testing.T) *aggregatetest.Fixture[account.State] {
	return aggregatetest.New(t, account.Definition())
}

var (
	opened    = account.Opened{Owner: "ada", Currency: "EUR"}
	deposited = func(c int64) account.Deposited { return account.Deposited{AmountCents: c, Currency: "EUR"} }
	balanceIs = func(want int64) func(testing.TB, account.State) {
		return func(t testing.TB, s account.State) { checkBalance(t, s, want) }
	}
	checkBalance = func(t testing.TB, s account.State, want int64) {
		t.Helper()
		if s.BalanceCents != want {
			t.Fatalf("balance %d cents, want %d", s.BalanceCents, want)
		}
	}
)

func TestOpen(t *testing.T) {
	fixture(t).When(account.Open{Owner: "ada", Currency: "EUR"}).Then(opened).
		ThenState(func(t testing.TB, s account.State) {
			if !s.IsOpen() || s.Owner != "ada" || s.Currency != "EUR" || s.BalanceCents != 0 {
				t.Fatalf("state %+v", s)
			}
		})
	for _, tc := range []struct {
		name  string
		given []any
		cmd   account.Open
		code  string
	}{
		{"twice", []any{opened}, account.Open{Owner: "bob", Currency: "EUR"}, account.CodeAlreadyOpen},
		{"without an owner", nil, account.Open{Owner: " ", Currency: "EUR"}, account.CodeInvalidOwner},
		{"in a currency that is no ISO code", nil, account.Open{Owner: "ada", Currency: "euro"}, account.CodeInvalidCurrency},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fixture(t).Given(tc.given...).When(tc.cmd).ThenRejected(tc.code)
		})
	}
}

func TestDeposit(t *testing.T) {
	fixture(t).Given(opened).When(account.Deposit{AmountCents: 1250}).Then(deposited(1250)).ThenState(balanceIs(1250))
	fixture(t).Given(opened, deposited(100)).When(account.Deposit{AmountCents: 50, Currency: "EUR"}).Then(deposited(50)).ThenState(balanceIs(150))
	for _, tc := range []struct {
		name  string
		given []any
		cmd   account.Deposit
		code  string
	}{
		{"to an account not open", nil, account.Deposit{AmountCents: 1}, account.CodeNotOpen},
		{"of zero", []any{opened}, account.Deposit{AmountCents: 0}, account.CodeInvalidAmount},
		{"of a negative amount", []any{opened}, account.Deposit{AmountCents: -5}, account.CodeInvalidAmount},
		{"in another currency", []any{opened}, account.Deposit{AmountCents: 5, Currency: "USD"}, account.CodeCurrencyMismatch},
		{"past the largest balance", []any{opened, deposited(account.MaxBalance)}, account.Deposit{AmountCents: 1}, account.CodeAmountTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fixture(t).Given(tc.given...).When(tc.cmd).ThenRejected(tc.code)
		})
	}
}

func TestWithdraw(t *testing.T) {
	fixture(t).Given(opened, deposited(1000)).When(account.Withdraw{AmountCents: 400}).
		Then(account.Withdrawn{AmountCents: 400}).ThenState(balanceIs(600))
	// The whole balance may go; not a cent more.
	fixture(t).Given(opened, deposited(1000)).When(account.Withdraw{AmountCents: 1000}).
		Then(account.Withdrawn{AmountCents: 1000}).ThenState(balanceIs(0))
	fixture(t).Given(opened, deposited(1000)).When(account.Withdraw{AmountCents: 1001}).
		ThenRejected(account.CodeInsufficientFunds).ThenState(balanceIs(1000))
	fixture(t).Given(opened).When(account.Withdraw{AmountCents: 0}).ThenRejected(account.CodeInvalidAmount)
	fixture(t).When(account.Withdraw{AmountCents: 1}).ThenRejected(account.CodeNotOpen)
}

func TestARepeatedWithdrawalIsADuplicateNotASecondWithdrawal(t *testing.T) {
	f := fixture(t).Given(opened, deposited(1000))
	cmd := f.Command(account.Withdraw{AmountCents: 300})
	f.WhenCommand(cmd).Then(account.Withdrawn{AmountCents: 300})
	f.WhenCommand(cmd).ThenError(aggregates.ErrDuplicateCommand).ThenState(balanceIs(700))
}

// eventDoc is a stored Deposited event document of the given schema
// version, as an older release wrote it.
func eventDoc(id string, version int64, schema int, data string) []byte {
	return []byte(fmt.Sprintf(`{"specversion":"1.0","id":"%s","source":"/chronicle/account","type":"account.Deposited","subject":%q,"time":"2026-01-02T03:04:05Z","aggregatetype":"account","aggregateversion":%d,"schemaversion":%d,"data":%s}`,
		ulid.Make(), id, version, schema, data))
}

func TestDepositedVersion1IsReadAsVersion2(t *testing.T) {
	kind := account.Definition()
	for _, tc := range []struct {
		v1   string
		want int64
	}{
		{`{"amount":12.5}`, 1250},
		{`{"amount":12.05}`, 1205},
		{`{"amount":7}`, 700},
		{`{"amount":0.1}`, 10},
		{`{"amount":92233720368547758.07}`, 9223372036854775807},
	} {
		e, err := kind.DecodeEvent(eventDoc("acc-upcast", 1, 1, tc.v1))
		if err != nil {
			t.Errorf("%s: %v", tc.v1, err)
			continue
		}
		if e.Data != (account.Deposited{AmountCents: tc.want, Currency: "EUR"}) || e.SchemaVersion != 2 {
			t.Errorf("%s read as %+v (schema %d), want %d cents in EUR, schema 2", tc.v1, e.Data, e.SchemaVersion, tc.want)
		}
	}
	for _, bad := range []string{`{"amount":1.005}`, `{"amount":-3}`, `{"amount":1e3}`, `{}`, `{"amount":"12"}`, `{"amount":92233720368547758.08}`} {
		if _, err := kind.DecodeEvent(eventDoc("acc-upcast", 1, 1, bad)); !errors.Is(err, aggregates.ErrSchemaVersion) {
			t.Errorf("%s: %v, want ErrSchemaVersion", bad, err)
		}
	}
}

func TestAnAccountOfVersion1EventsReplaysToTheSameBalance(t *testing.T) {
	kind := account.Definition()
	opened, err := json.Marshal(opened)
	if err != nil {
		t.Fatal(err)
	}
	docs := [][]byte{
		[]byte(fmt.Sprintf(`{"specversion":"1.0","id":"%s","source":"/chronicle/account","type":"account.Opened","subject":"acc-old","time":"2026-01-02T03:04:05Z","aggregatetype":"account","aggregateversion":0,"schemaversion":1,"data":%s}`, ulid.Make(), opened)),
		eventDoc("acc-old", 1, 1, `{"amount":10.5}`),
		eventDoc("acc-old", 2, 2, `{"amount_cents":250,"currency":"EUR"}`),
	}
	history := make([]aggregates.Event, len(docs))
	for i, d := range docs {
		if history[i], err = kind.DecodeEvent(d); err != nil {
			t.Fatal(err)
		}
	}
	a := kind.New("acc-old")
	if err := aggregates.Rebuild(a, history, nil); err != nil {
		t.Fatal(err)
	}
	checkBalance(t, a.State(), 1300)
	// And the rebuilt account decides as any other.
	cmd, err := kind.NewCommand("acc-old", account.Withdraw{AmountCents: 1301}, aggregates.Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Execute(&cmd, time.Now()); !errors.Is(err, aggregates.ErrRejected) {
		t.Fatalf("overdraft: %v, want a rejection", err)
	}
}
