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
)

// Commands.
type (
	// CreateOrder starts an order for a user.
	CreateOrder struct {
		UserID string `json:"user_id"`
	}
	// AddLine adds quantity of a product at a unit price (minor units).
	// Adding a product already on the order adds to its quantity; the unit
	// price must then be the same.
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

// transitions lists where each status may go.
var transitions = map[Status][]Status{
	StatusNew:       {StatusConfirmed, StatusCancelled},
	StatusConfirmed: {StatusPaid, StatusCancelled},
	StatusPaid:      {StatusShipped, StatusCancelled},
}

// maxAmount bounds a line's amount and the total so that sums cannot
// overflow int64.
const maxAmount = math.MaxInt64 / 4

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
				s.Lines = slices.Delete(s.Lines, i, i+1)
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
	qty := c.Quantity
	if i := s.line(c.ProductID); i >= 0 {
		if s.Lines[i].UnitPrice != c.UnitPrice {
			return nil, aggregates.Reject(CodeInvalidPrice, "product %d is on the order at unit price %d, not %d: remove the line first", c.ProductID, s.Lines[i].UnitPrice, c.UnitPrice)
		}
		qty += s.Lines[i].Quantity
	}
	// qty*price bounds the line; the added amount is at most that, so the
	// sums below cannot overflow.
	if c.UnitPrice > 0 && (qty > maxAmount/c.UnitPrice || s.Total+c.Quantity*c.UnitPrice > maxAmount) {
		return nil, aggregates.Reject(CodeTooLarge, "the line would make the order's total exceed %d", int64(maxAmount))
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
	switch c.Status {
	case StatusNew, StatusConfirmed, StatusPaid, StatusShipped, StatusCancelled:
	default:
		return nil, aggregates.Reject(CodeUnknownStatus, "unknown status %q: use confirmed, paid, shipped or cancelled", c.Status)
	}
	if !slices.Contains(transitions[s.Status], c.Status) {
		return nil, aggregates.Reject(CodeInvalidTransition, "an order that is %s cannot become %s", s.Status, c.Status)
	}
	if c.Status == StatusShipped && len(s.Lines) == 0 {
		return nil, aggregates.Reject(CodeNoLines, "an order ships only with lines")
	}
	return []any{StatusChanged{From: s.Status, To: c.Status}}, nil
}

// valid is the order's invariant, checked after every event.
func valid(s *State) error {
	var sum int64
	for _, l := range s.Lines {
		if l.Quantity <= 0 {
			return fmt.Errorf("line of product %d has quantity %d", l.ProductID, l.Quantity)
		}
		if l.UnitPrice < 0 {
			return fmt.Errorf("line of product %d has negative unit price %d", l.ProductID, l.UnitPrice)
		}
		sum += l.Amount()
	}
	if sum != s.Total {
		return fmt.Errorf("total %d differs from the sum of the lines %d", s.Total, sum)
	}
	if s.Status == StatusShipped && len(s.Lines) == 0 {
		return errors.New("a shipped order has no lines")
	}
	if s.Exists() && s.UserID == "" {
		return errors.New("the order has no user")
	}
	return nil
}
