// Package order is the Order aggregate of the first seed article: an order
// is created for a user, gets lines while it is new, and moves
// new → confirmed → paid → shipped, or to cancelled before it ships.
//
// Money is exact: amounts are int64 minor units (cents), never floats, and
// the order's total always equals the sum of its lines.
package order

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/chronicle-es/chronicle/aggregates"
)

// Status is where an order is in its life.
type Status string

// The statuses of an order.
const (
	StatusNew       Status = "new"
	StatusConfirmed Status = "confirmed"
	StatusPaid      Status = "paid"
	StatusShipped   Status = "shipped"
	StatusCancelled Status = "cancelled"
)

// Rejection codes of the order's commands.
const (
	CodeAlreadyExists     = "already_exists"
	CodeNotFound          = "not_found"
	CodeInvalidUser       = "invalid_user"
	CodeInvalidQuantity   = "invalid_quantity"
	CodeInvalidPrice      = "invalid_price"
	CodeInvalidProduct    = "invalid_product"
	CodeNotNew            = "not_new"
	CodeLineNotFound      = "line_not_found"
	CodeUnknownStatus     = "unknown_status"
	CodeInvalidTransition = "invalid_transition"
	CodeNoLines           = "no_lines"
	CodeTooLarge          = "amount_too_large"
	CodeTooManyLines      = "too_many_lines"
)

// Limits of one order.
const (
	// MaxAmount bounds every quantity, line amount and total, so that no sum
	// of them can overflow int64. At 2.3e18 minor units it is far above any
	// real order.
	MaxAmount = math.MaxInt64 / 4
	// MaxLines is the most products one order holds. It keeps the per-event
	// work (finding a line, checking the invariant) and the memory of a
	// cached order bounded.
	MaxLines = 1000
)

// Commands.
type (
	// CreateOrder starts an order for a user.
	CreateOrder struct {
		UserID string `json:"user_id"`
	}
	// AddLine adds quantity of a product at a unit price (minor units).
	// Adding a product already on the order merges into its line: the
	// quantities add up, and the unit price must be the line's (otherwise
	// the command is rejected with CodeInvalidPrice; remove the line first
	// to change the price). An order therefore has one line per product.
	AddLine struct {
		ProductID int64 `json:"product_id"`
		Quantity  int64 `json:"quantity"`
		UnitPrice int64 `json:"unit_price"`
	}
	// RemoveLine removes a product's line.
	RemoveLine struct {
		ProductID int64 `json:"product_id"`
	}
	// ChangeStatus moves the order to another status.
	ChangeStatus struct {
		Status Status `json:"status"`
	}
)

// Events.
type (
	// OrderCreated starts an order's history.
	OrderCreated struct {
		UserID string `json:"user_id"`
	}
	// LineAdded records a product added (or its quantity increased).
	LineAdded struct {
		ProductID int64 `json:"product_id"`
		Quantity  int64 `json:"quantity"`
		UnitPrice int64 `json:"unit_price"`
	}
	// LineRemoved records a product's line removed.
	LineRemoved struct {
		ProductID int64 `json:"product_id"`
	}
	// StatusChanged records a status move.
	StatusChanged struct {
		From Status `json:"from"`
		To   Status `json:"to"`
	}
)

// Line is one product on an order.
type Line struct {
	ProductID int64 `json:"product_id"`
	Quantity  int64 `json:"quantity"`
	UnitPrice int64 `json:"unit_price"`
}

// Amount is the line's price: quantity × unit price.
func (l Line) Amount() int64 { return l.Quantity * l.UnitPrice }

// State is an order as its events made it.
type State struct {
	UserID string `json:"user_id"`
	Status Status `json:"status"`
	Lines  []Line `json:"lines,omitempty"`
	Total  int64  `json:"total"`
}

// Exists reports whether the order was created.
func (s *State) Exists() bool { return s.Status != "" }

// Clone copies the state deeply (the lines slice), so a rejected command
// leaves the original untouched.
func (s *State) Clone() State {
	c := *s
	c.Lines = slices.Clone(s.Lines)
	return c
}

func (s *State) line(product int64) int {
	for i := range s.Lines {
		if s.Lines[i].ProductID == product {
			return i
		}
	}
	return -1
}

// Known reports whether s is one of the five statuses.
func (s Status) Known() bool {
	switch s {
	case StatusNew, StatusConfirmed, StatusPaid, StatusShipped, StatusCancelled:
		return true
	}
	return false
}

// CanBecome reports whether an order of status s may move to next: one step
// along new → confirmed → paid → shipped, or to cancelled from any status
// before shipped.
func (s Status) CanBecome(next Status) bool {
	switch next {
	case StatusConfirmed:
		return s == StatusNew
	case StatusPaid:
		return s == StatusConfirmed
	case StatusShipped:
		return s == StatusPaid
	case StatusCancelled:
		return s == StatusNew || s == StatusConfirmed || s == StatusPaid
	}
	return false
}

// Definition returns the order aggregate type, named "order".
func Definition() *aggregates.Definition[State] {
	return aggregates.MustDefine("order",
		aggregates.When("OrderCreated", func(s *State, e OrderCreated) {
			s.UserID, s.Status = e.UserID, StatusNew
		}),
		aggregates.When("LineAdded", func(s *State, e LineAdded) {
			if i := s.line(e.ProductID); i >= 0 {
				s.Lines[i].Quantity += e.Quantity
			} else {
				s.Lines = append(s.Lines, Line(e))
			}
			s.Total += e.Quantity * e.UnitPrice
		}),
		aggregates.When("LineRemoved", func(s *State, e LineRemoved) {
			if i := s.line(e.ProductID); i >= 0 {
				s.Total -= s.Lines[i].Amount()
				if s.Lines = slices.Delete(s.Lines, i, i+1); len(s.Lines) == 0 {
					s.Lines = nil // as a snapshot reads it back: no lines is nil
				}
			}
		}),
		aggregates.When("StatusChanged", func(s *State, e StatusChanged) { s.Status = e.To }),
		aggregates.Handle("CreateOrder", create),
		aggregates.Handle("AddLine", addLine),
		aggregates.Handle("RemoveLine", removeLine),
		aggregates.Handle("ChangeStatus", changeStatus),
		aggregates.Invariant(valid),
	)
}

func create(s State, c CreateOrder) ([]any, error) {
	if s.Exists() {
		return nil, aggregates.Reject(CodeAlreadyExists, "the order already exists")
	}
	if c.UserID == "" {
		return nil, aggregates.Reject(CodeInvalidUser, "user_id is required")
	}
	return []any{OrderCreated(c)}, nil
}

func mustBeNew(s *State) error {
	if !s.Exists() {
		return aggregates.Reject(CodeNotFound, "the order does not exist: send CreateOrder first")
	}
	if s.Status != StatusNew {
		return aggregates.Reject(CodeNotNew, "lines only change while the order is new; it is %s", s.Status)
	}
	return nil
}

func addLine(s State, c AddLine) ([]any, error) {
	if err := mustBeNew(&s); err != nil {
		return nil, err
	}
	switch {
	case c.ProductID <= 0:
		return nil, aggregates.Reject(CodeInvalidProduct, "product_id must be positive, got %d", c.ProductID)
	case c.Quantity <= 0:
		return nil, aggregates.Reject(CodeInvalidQuantity, "quantity must be greater than 0, got %d", c.Quantity)
	case c.UnitPrice < 0:
		return nil, aggregates.Reject(CodeInvalidPrice, "unit_price must not be negative, got %d", c.UnitPrice)
	}
	var have int64 // quantity already on the order
	if i := s.line(c.ProductID); i >= 0 {
		if s.Lines[i].UnitPrice != c.UnitPrice {
			return nil, aggregates.Reject(CodeInvalidPrice, "product %d is on the order at unit price %d, not %d: remove the line first to change its price", c.ProductID, s.Lines[i].UnitPrice, c.UnitPrice)
		}
		have = s.Lines[i].Quantity
	} else if len(s.Lines) >= MaxLines {
		return nil, aggregates.Reject(CodeTooManyLines, "the order already has %d lines, the most it may have", MaxLines)
	}
	// Every stored quantity, amount and the total are at most MaxAmount
	// (the invariant), so none of these sums or products can overflow.
	if c.Quantity > MaxAmount-have ||
		c.UnitPrice > 0 && (have+c.Quantity > MaxAmount/c.UnitPrice || c.Quantity*c.UnitPrice > MaxAmount-s.Total) {
		return nil, aggregates.Reject(CodeTooLarge, "the line would make a quantity, the line's amount or the order's total exceed %d", int64(MaxAmount))
	}
	return []any{LineAdded(c)}, nil
}

func removeLine(s State, c RemoveLine) ([]any, error) {
	if err := mustBeNew(&s); err != nil {
		return nil, err
	}
	if s.line(c.ProductID) < 0 {
		return nil, aggregates.Reject(CodeLineNotFound, "product %d is not on the order", c.ProductID)
	}
	return []any{LineRemoved(c)}, nil
}

func changeStatus(s State, c ChangeStatus) ([]any, error) {
	if !s.Exists() {
		return nil, aggregates.Reject(CodeNotFound, "the order does not exist: send CreateOrder first")
	}
	if !c.Status.Known() {
		return nil, aggregates.Reject(CodeUnknownStatus, "unknown status %q: use confirmed, paid, shipped or cancelled", c.Status)
	}
	if !s.Status.CanBecome(c.Status) {
		return nil, aggregates.Reject(CodeInvalidTransition, "an order that is %s cannot become %s", s.Status, c.Status)
	}
	if c.Status == StatusShipped && len(s.Lines) == 0 {
		return nil, aggregates.Reject(CodeNoLines, "an order ships only with lines")
	}
	return []any{StatusChanged{From: s.Status, To: c.Status}}, nil
}

// valid is the order's invariant, checked after every event: the total is
// exactly the sum of the lines, every amount is within MaxAmount, and the
// status agrees with the lines. Apply merges lines by product, so products
// are unique without checking (which would cost O(lines²) per event).
func valid(s *State) error {
	if !s.Exists() {
		if s.UserID != "" || len(s.Lines) != 0 || s.Total != 0 {
			return errors.New("an order that was never created has a user, lines or a total")
		}
		return nil
	}
	if !s.Status.Known() {
		return fmt.Errorf("unknown status %q", s.Status)
	}
	if s.UserID == "" {
		return errors.New("the order has no user")
	}
	if len(s.Lines) > MaxLines {
		return fmt.Errorf("%d lines, more than %d", len(s.Lines), MaxLines)
	}
	var sum int64
	for _, l := range s.Lines {
		switch {
		case l.ProductID <= 0:
			return fmt.Errorf("line of product %d: product id must be positive", l.ProductID)
		case l.Quantity <= 0 || l.Quantity > MaxAmount:
			return fmt.Errorf("line of product %d has quantity %d", l.ProductID, l.Quantity)
		case l.UnitPrice < 0 || l.UnitPrice > 0 && l.Quantity > MaxAmount/l.UnitPrice:
			return fmt.Errorf("line of product %d: unit price %d × quantity %d is negative or above %d", l.ProductID, l.UnitPrice, l.Quantity, int64(MaxAmount))
		case l.Amount() > MaxAmount-sum:
			return fmt.Errorf("the lines sum to more than %d", int64(MaxAmount))
		}
		sum += l.Amount()
	}
	if sum != s.Total {
		return fmt.Errorf("total %d differs from the sum of the lines %d", s.Total, sum)
	}
	if s.Status == StatusShipped && len(s.Lines) == 0 {
		return errors.New("a shipped order has no lines")
	}
	return nil
}
