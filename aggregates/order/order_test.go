package order_test

import (
	"errors"
	"testing"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/aggregatetest"
	"github.com/chronicle-es/chronicle/aggregates/order"
)

func fixture(t *testing.T) *aggregatetest.Fixture[order.State] {
	return aggregatetest.New(t, order.Definition())
}

var (
	created = order.OrderCreated{UserID: "u-1"}
	line512 = order.LineAdded{ProductID: 512, Quantity: 1, UnitPrice: 1999}
	line614 = order.LineAdded{ProductID: 614, Quantity: 3, UnitPrice: 500}
)

func status(from, to order.Status) order.StatusChanged {
	return order.StatusChanged{From: from, To: to}
}

func TestCreateOrder(t *testing.T) {
	fixture(t).When(order.CreateOrder{UserID: "u-1"}).Then(created).
		ThenState(func(t testing.TB, s order.State) {
			if s.Status != order.StatusNew || s.UserID != "u-1" || s.Total != 0 {
				t.Fatalf("state %+v", s)
			}
		})
	fixture(t).Given(created).When(order.CreateOrder{UserID: "u-2"}).ThenRejected(order.CodeAlreadyExists)
	fixture(t).When(order.CreateOrder{}).ThenRejected(order.CodeInvalidUser)
}

func TestAddLine(t *testing.T) {
	fixture(t).Given(created).When(order.AddLine{ProductID: 512, Quantity: 1, UnitPrice: 1999}).Then(line512).
		ThenState(func(t testing.TB, s order.State) {
			if s.Total != 1999 || len(s.Lines) != 1 {
				t.Fatalf("state %+v", s)
			}
		})
	// The same product again adds to its quantity.
	fixture(t).Given(created, line512).When(order.AddLine{ProductID: 512, Quantity: 2, UnitPrice: 1999}).
		Then(order.LineAdded{ProductID: 512, Quantity: 2, UnitPrice: 1999}).
		ThenState(func(t testing.TB, s order.State) {
			if len(s.Lines) != 1 || s.Lines[0].Quantity != 3 || s.Total != 3*1999 {
				t.Fatalf("state %+v", s)
			}
		})
	// Exactly at the limit is fine.
	fixture(t).Given(created, order.LineAdded{ProductID: 1, Quantity: order.MaxAmount - 1, UnitPrice: 1}).
		When(order.AddLine{ProductID: 2, Quantity: 1, UnitPrice: 1}).
		Then(order.LineAdded{ProductID: 2, Quantity: 1, UnitPrice: 1}).
		ThenState(func(t testing.TB, s order.State) {
			if s.Total != order.MaxAmount {
				t.Fatalf("total %d, want %d", s.Total, int64(order.MaxAmount))
			}
		})
	for _, tc := range []struct {
		name  string
		given []any
		cmd   order.AddLine
		code  string
	}{
		{"to an order that does not exist", nil, order.AddLine{ProductID: 1, Quantity: 1, UnitPrice: 1}, order.CodeNotFound},
		{"with quantity zero", []any{created}, order.AddLine{ProductID: 1, Quantity: 0, UnitPrice: 1}, order.CodeInvalidQuantity},
		{"with a negative quantity", []any{created}, order.AddLine{ProductID: 1, Quantity: -2, UnitPrice: 1}, order.CodeInvalidQuantity},
		{"with a negative price", []any{created}, order.AddLine{ProductID: 1, Quantity: 1, UnitPrice: -1}, order.CodeInvalidPrice},
		{"without a product", []any{created}, order.AddLine{ProductID: 0, Quantity: 1, UnitPrice: 1}, order.CodeInvalidProduct},
		{"at another price than the line's", []any{created, line512}, order.AddLine{ProductID: 512, Quantity: 1, UnitPrice: 1}, order.CodeInvalidPrice},
		{"once the order is confirmed", []any{created, line512, status(order.StatusNew, order.StatusConfirmed)}, order.AddLine{ProductID: 1, Quantity: 1, UnitPrice: 1}, order.CodeNotNew},
		{"so large the line's amount overflows", []any{created}, order.AddLine{ProductID: 1, Quantity: 1 << 62, UnitPrice: 1 << 62}, order.CodeTooLarge},
		{"so large the total passes the limit", []any{created, order.LineAdded{ProductID: 1, Quantity: 1, UnitPrice: order.MaxAmount}}, order.AddLine{ProductID: 2, Quantity: 1, UnitPrice: 1}, order.CodeTooLarge},
		{"merging free items past the quantity limit", []any{created, order.LineAdded{ProductID: 1, Quantity: order.MaxAmount, UnitPrice: 0}}, order.AddLine{ProductID: 1, Quantity: 1, UnitPrice: 0}, order.CodeTooLarge},
		{"merging into a line whose amount would overflow", []any{created, order.LineAdded{ProductID: 1, Quantity: order.MaxAmount / 1000, UnitPrice: 1000}}, order.AddLine{ProductID: 1, Quantity: 1, UnitPrice: 1000}, order.CodeTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fixture(t).Given(tc.given...).When(tc.cmd).ThenRejected(tc.code)
		})
	}
}

func TestAnOrderHoldsAtMostMaxLines(t *testing.T) {
	given := []any{created}
	for p := range int64(order.MaxLines) {
		given = append(given, order.LineAdded{ProductID: p + 1, Quantity: 1, UnitPrice: 1})
	}
	fixture(t).Given(given...).When(order.AddLine{ProductID: order.MaxLines + 1, Quantity: 1, UnitPrice: 1}).
		ThenRejected(order.CodeTooManyLines)
	// A product already on the order still merges.
	fixture(t).Given(given...).When(order.AddLine{ProductID: 1, Quantity: 1, UnitPrice: 1}).
		Then(order.LineAdded{ProductID: 1, Quantity: 1, UnitPrice: 1})
}

func TestRemoveLine(t *testing.T) {
	fixture(t).Given(created, line512, line614).When(order.RemoveLine{ProductID: 512}).
		Then(order.LineRemoved{ProductID: 512}).
		ThenState(func(t testing.TB, s order.State) {
			if len(s.Lines) != 1 || s.Total != 1500 {
				t.Fatalf("state %+v", s)
			}
		})
	fixture(t).Given(created).When(order.RemoveLine{ProductID: 512}).ThenRejected(order.CodeLineNotFound)
	fixture(t).When(order.RemoveLine{ProductID: 512}).ThenRejected(order.CodeNotFound)
	fixture(t).Given(created, line512, status(order.StatusNew, order.StatusCancelled)).
		When(order.RemoveLine{ProductID: 512}).ThenRejected(order.CodeNotNew)
}

func TestStatusMoves(t *testing.T) {
	confirmed := status(order.StatusNew, order.StatusConfirmed)
	paid := status(order.StatusConfirmed, order.StatusPaid)
	shipped := status(order.StatusPaid, order.StatusShipped)
	fixture(t).Given(created, line512).When(order.ChangeStatus{Status: order.StatusConfirmed}).Then(confirmed)
	fixture(t).Given(created, line512, confirmed).When(order.ChangeStatus{Status: order.StatusPaid}).Then(paid)
	fixture(t).Given(created, line512, confirmed, paid).When(order.ChangeStatus{Status: order.StatusShipped}).Then(shipped)
	// Cancelled from any state before shipped.
	for _, history := range [][]any{{created}, {created, line512, confirmed}, {created, line512, confirmed, paid}} {
		from := order.StatusNew
		if n := len(history); n > 2 {
			from = history[n-1].(order.StatusChanged).To
		}
		fixture(t).Given(history...).When(order.ChangeStatus{Status: order.StatusCancelled}).Then(status(from, order.StatusCancelled))
	}
	for _, tc := range []struct {
		name  string
		given []any
		to    order.Status
		code  string
	}{
		{"of an order that does not exist", nil, order.StatusConfirmed, order.CodeNotFound},
		{"to an unknown status", []any{created}, "lost", order.CodeUnknownStatus},
		{"skipping confirmation", []any{created, line512}, order.StatusPaid, order.CodeInvalidTransition},
		{"back to new", []any{created, line512, confirmed}, order.StatusNew, order.CodeInvalidTransition},
		{"to the status it has", []any{created}, order.StatusNew, order.CodeInvalidTransition},
		{"cancelling a shipped order", []any{created, line512, confirmed, paid, shipped}, order.StatusCancelled, order.CodeInvalidTransition},
		{"anything after cancelled", []any{created, status(order.StatusNew, order.StatusCancelled)}, order.StatusConfirmed, order.CodeInvalidTransition},
		{"shipping without lines", []any{created, confirmed, paid}, order.StatusShipped, order.CodeNoLines},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fixture(t).Given(tc.given...).When(order.ChangeStatus{Status: tc.to}).ThenRejected(tc.code)
		})
	}
}

// TestEveryStatusMove tries every status against every status and checks the
// outcome against the life cycle written out by hand.
func TestEveryStatusMove(t *testing.T) {
	statuses := []order.Status{order.StatusNew, order.StatusConfirmed, order.StatusPaid, order.StatusShipped, order.StatusCancelled}
	allowed := map[[2]order.Status]bool{
		{order.StatusNew, order.StatusConfirmed}: true, {order.StatusConfirmed, order.StatusPaid}: true,
		{order.StatusPaid, order.StatusShipped}: true, {order.StatusNew, order.StatusCancelled}: true,
		{order.StatusConfirmed, order.StatusCancelled}: true, {order.StatusPaid, order.StatusCancelled}: true,
	}
	// The shortest history that reaches each status, with a line.
	reach := map[order.Status][]any{
		order.StatusNew:       {created, line512},
		order.StatusConfirmed: {created, line512, status(order.StatusNew, order.StatusConfirmed)},
		order.StatusPaid: {created, line512, status(order.StatusNew, order.StatusConfirmed),
			status(order.StatusConfirmed, order.StatusPaid)},
		order.StatusShipped: {created, line512, status(order.StatusNew, order.StatusConfirmed),
			status(order.StatusConfirmed, order.StatusPaid), status(order.StatusPaid, order.StatusShipped)},
		order.StatusCancelled: {created, line512, status(order.StatusNew, order.StatusCancelled)},
	}
	for _, from := range statuses {
		for _, to := range statuses {
			t.Run(string(from)+" to "+string(to), func(t *testing.T) {
				if got := from.CanBecome(to); got != allowed[[2]order.Status{from, to}] {
					t.Fatalf("CanBecome = %v", got)
				}
				f := fixture(t).Given(reach[from]...).When(order.ChangeStatus{Status: to})
				if allowed[[2]order.Status{from, to}] {
					f.Then(status(from, to))
				} else {
					f.ThenRejected(order.CodeInvalidTransition)
				}
			})
		}
	}
}

func TestDuplicateCommandAndExpectedVersion(t *testing.T) {
	f := fixture(t).Given(created)
	cmd := f.Command(order.AddLine{ProductID: 1, Quantity: 1, UnitPrice: 10})
	f.WhenCommand(cmd).Then(order.LineAdded{ProductID: 1, Quantity: 1, UnitPrice: 10})
	f.WhenCommand(cmd).ThenError(aggregates.ErrDuplicateCommand)
	if f.Root().Version() != 1 {
		t.Fatalf("duplicate changed the version to %d", f.Root().Version())
	}

	g := fixture(t).Given(created, line512)
	stale := g.Command(order.RemoveLine{ProductID: 512})
	v := int64(0)
	stale.ExpectedVersion = &v
	g.WhenCommand(stale).ThenError(aggregates.ErrConcurrencyConflict)
	fresh := g.Command(order.RemoveLine{ProductID: 512})
	v1 := int64(1)
	fresh.ExpectedVersion = &v1
	g.WhenCommand(fresh).Then(order.LineRemoved{ProductID: 512})
}

// TestInvariantCatchesInconsistentHistories replays event streams the
// handlers would never produce: the invariant must notice each.
func TestInvariantCatchesInconsistentHistories(t *testing.T) {
	def := order.Definition()
	for _, tc := range []struct {
		name   string
		events []any
	}{
		{"a line of quantity 0", []any{created, order.LineAdded{ProductID: 1, Quantity: 0, UnitPrice: 5}}},
		{"a negative unit price", []any{created, order.LineAdded{ProductID: 1, Quantity: 1, UnitPrice: -5}}},
		{"a product id of 0", []any{created, order.LineAdded{ProductID: 0, Quantity: 1, UnitPrice: 5}}},
		{"a line before the order exists", []any{order.LineAdded{ProductID: 1, Quantity: 1, UnitPrice: 5}}},
		{"an order without a user", []any{order.OrderCreated{}}},
		{"an unknown status", []any{created, order.StatusChanged{From: order.StatusNew, To: "lost"}}},
		{"shipped without lines", []any{created, order.StatusChanged{From: order.StatusNew, To: order.StatusShipped}}},
		{"a merge at another price (the total drifts from the lines)", []any{created, line512, order.LineAdded{ProductID: 512, Quantity: 1, UnitPrice: 1}}},
		{"an amount that would overflow", []any{created, order.LineAdded{ProductID: 1, Quantity: 1 << 40, UnitPrice: 1 << 40}}},
		{"lines summing past the limit", []any{created, order.LineAdded{ProductID: 1, Quantity: 1, UnitPrice: order.MaxAmount}, order.LineAdded{ProductID: 2, Quantity: 1, UnitPrice: 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := def.New("o-1")
			var err error
			for i, p := range tc.events {
				name, _ := def.EventType(p)
				err = r.Apply(&aggregates.Event{Type: name, Subject: "o-1", Version: int64(i), Data: p})
				if i < len(tc.events)-1 && err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
			}
			if !errors.Is(err, aggregates.ErrInvariantViolated) {
				t.Fatalf("last event: %v, want ErrInvariantViolated", err)
			}
			// Replay keeps the fact and moves on.
			if r.Version() != int64(len(tc.events)-1) {
				t.Fatalf("version %d after replay", r.Version())
			}
		})
	}
}
