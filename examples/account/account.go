// Package account is a complete user-defined aggregate, written the way a
// team using Chronicle writes its own: a bank account that is opened in one
// currency, takes deposits and withdrawals, and never goes below zero.
//
// It shows the pieces of a domain: the state, one apply function per event,
// one handler per command, rejections with codes, an invariant, and schema
// evolution (Deposited moved to version 2, with an upcaster for the version
// 1 events already in Kafka). The command in cmd/accounts serves it with
// every chronicle subcommand; README.md walks through running it.
package account

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/chronicle-es/chronicle/aggregates"
)

// Rejection codes of the account's commands: a client matches on them
// (Result.Code), never on the reason's text.
const (
	CodeAlreadyOpen       = "already_open"
	CodeNotOpen           = "not_open"
	CodeInvalidOwner      = "invalid_owner"
	CodeInvalidCurrency   = "invalid_currency"
	CodeCurrencyMismatch  = "currency_mismatch"
	CodeInvalidAmount     = "invalid_amount"
	CodeAmountTooLarge    = "amount_too_large"
	CodeInsufficientFunds = "insufficient_funds"
)

// MaxBalance bounds a balance (in cents), so no sum of deposits overflows.
const MaxBalance = math.MaxInt64 / 2

// Commands.
type (
	// Open opens the account for an owner, in a currency (ISO 4217, e.g.
	// "EUR").
	Open struct {
		Owner    string `json:"owner"`
		Currency string `json:"currency"`
	}
	// Deposit adds money. Currency may be left out; when given it must be
	// the account's.
	Deposit struct {
		AmountCents int64  `json:"amount_cents"`
		Currency    string `json:"currency,omitempty"`
	}
	// Withdraw takes money out; it is rejected with CodeInsufficientFunds
	// rather than overdraw the account.
	Withdraw struct {
		AmountCents int64 `json:"amount_cents"`
	}
)

// Events.
type (
	// Opened starts an account's history.
	Opened struct {
		Owner    string `json:"owner"`
		Currency string `json:"currency"`
	}
	// Deposited is schema version 2: exact cents and the currency. Version
	// 1 was {"amount": 12.5}, in euros as a JSON number; upcastDeposited
	// reads it.
	Deposited struct {
		AmountCents int64  `json:"amount_cents"`
		Currency    string `json:"currency"`
	}
	// Withdrawn records money taken out.
	Withdrawn struct {
		AmountCents int64 `json:"amount_cents"`
	}
)

// State is an account as its events made it.
type State struct {
	Owner        string `json:"owner,omitempty"`
	Currency     string `json:"currency,omitempty"`
	BalanceCents int64  `json:"balance_cents"`
}

// IsOpen reports whether the account was opened.
func (s *State) IsOpen() bool { return s.Owner != "" }

// Definition returns the account aggregate type, named "account".
//
// Its StateSchema is 1. Bump it whenever an apply function or State's shape
// changes meaning: snapshots of the old schema are then ignored and every
// account is rebuilt from its events (`chronicle snapshots verify` finds
// the snapshots a forgotten bump leaves wrong).
func Definition() *aggregates.Definition[State] {
	return aggregates.MustDefine("account",
		aggregates.When("Opened", func(s *State, e Opened) { s.Owner, s.Currency = e.Owner, e.Currency }),
		aggregates.When("Deposited", func(s *State, e Deposited) { s.BalanceCents += e.AmountCents },
			aggregates.SchemaVersion(2), aggregates.Upcast(1, upcastDeposited)),
		aggregates.When("Withdrawn", func(s *State, e Withdrawn) { s.BalanceCents -= e.AmountCents }),
		aggregates.Handle("Open", open),
		aggregates.Handle("Deposit", deposit),
		aggregates.Handle("Withdraw", withdraw),
		aggregates.Invariant(func(s *State) error {
			if s.BalanceCents < 0 {
				return fmt.Errorf("balance %d cents is below zero", s.BalanceCents)
			}
			return nil
		}),
		aggregates.StateSchema[State](1),
	)
}

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

func open(s State, c Open) ([]any, error) {
	switch {
	case s.IsOpen():
		return nil, aggregates.Reject(CodeAlreadyOpen, "the account is already open (owner %q)", s.Owner)
	case strings.TrimSpace(c.Owner) == "":
		return nil, aggregates.Reject(CodeInvalidOwner, "owner is required")
	case !currencyCode.MatchString(c.Currency):
		return nil, aggregates.Reject(CodeInvalidCurrency, "currency must be an ISO 4217 code such as \"EUR\", got %q", c.Currency)
	}
	return []any{Opened(c)}, nil
}

func deposit(s State, c Deposit) ([]any, error) {
	if err := checkAmount(s, c.AmountCents); err != nil {
		return nil, err
	}
	switch {
	case c.Currency != "" && c.Currency != s.Currency:
		return nil, aggregates.Reject(CodeCurrencyMismatch, "the account is in %s, the deposit in %s", s.Currency, c.Currency)
	case c.AmountCents > MaxBalance-s.BalanceCents:
		return nil, aggregates.Reject(CodeAmountTooLarge, "the balance would pass %d cents", int64(MaxBalance))
	}
	return []any{Deposited{AmountCents: c.AmountCents, Currency: s.Currency}}, nil
}

func withdraw(s State, c Withdraw) ([]any, error) {
	if err := checkAmount(s, c.AmountCents); err != nil {
		return nil, err
	}
	if c.AmountCents > s.BalanceCents {
		return nil, aggregates.Reject(CodeInsufficientFunds, "withdrawing %d cents from a balance of %d cents would overdraw the account", c.AmountCents, s.BalanceCents)
	}
	return []any{Withdrawn(c)}, nil
}

func checkAmount(s State, cents int64) error {
	if !s.IsOpen() {
		return aggregates.Reject(CodeNotOpen, "the account is not open: send Open first")
	}
	if cents <= 0 {
		return aggregates.Reject(CodeInvalidAmount, "amount_cents must be positive, got %d", cents)
	}
	return nil
}

// upcastDeposited turns a version 1 Deposited, {"amount": 12.5} in euros
// (every account was in euros before version 2), into version 2,
// {"amount_cents": 1250, "currency": "EUR"}. The amount is converted from
// its decimal text, never through a float, so no cent is lost.
func upcastDeposited(old json.RawMessage) (json.RawMessage, error) {
	var v1 struct {
		Amount json.RawMessage `json:"amount"` // the number's text
	}
	if err := json.Unmarshal(old, &v1); err != nil {
		return nil, fmt.Errorf("reading Deposited v1: %w", err)
	}
	cents, err := centsOf(string(v1.Amount))
	if err != nil {
		return nil, fmt.Errorf("reading Deposited v1 amount %q: %w", v1.Amount, err)
	}
	return json.Marshal(Deposited{AmountCents: cents, Currency: "EUR"})
}

// centsOf parses a decimal amount with at most two decimals ("12", "12.5",
// "12.05") into cents.
func centsOf(amount string) (int64, error) {
	whole, frac, _ := strings.Cut(amount, ".")
	if len(frac) > 2 {
		return 0, errors.New("more than two decimals")
	}
	frac += strings.Repeat("0", 2-len(frac))
	n, err := strconv.ParseInt(whole+frac, 10, 64)
	if err != nil || whole == "" || strings.ContainsAny(whole+frac, "+-eE") {
		return 0, errors.New("not a non-negative amount with at most two decimals")
	}
	return n, nil
}
