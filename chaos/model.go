package chaos

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/chronicle-es/chronicle/aggregates"
)

// The reference model of the order aggregate. It is written from
// docs/formats.md and the order rules, independently of aggregates/order
// and of the processor, so that a bug there shows up as a difference here.

// IdempotencyWindow is how many ids of commands that produced events an
// aggregate remembers (docs/formats.md: "the last 32").
const IdempotencyWindow = 32

// Limits of one order, as documented.
const (
	maxAmount = math.MaxInt64 / 4
	maxLines  = 1000
)

// The outcomes of a command, as written in a result's status.
const (
	statusAccepted  = "accepted"
	statusRejected  = "rejected"
	statusDuplicate = "duplicate"
	statusInvalid   = "invalid"
)

// orderLine is one product on an order.
type orderLine struct {
	ProductID int64 `json:"product_id"`
	Quantity  int64 `json:"quantity"`
	UnitPrice int64 `json:"unit_price"`
}

// orderState is an order as the state topic shows it.
type orderState struct {
	UserID string      `json:"user_id"`
	Status string      `json:"status"`
	Lines  []orderLine `json:"lines,omitempty"`
	Total  int64       `json:"total"`
}

func (s *orderState) exists() bool { return s.Status != "" }

func (s *orderState) line(product int64) int {
	for i := range s.Lines {
		if s.Lines[i].ProductID == product {
			return i
		}
	}
	return -1
}

func equalStates(a, b orderState) bool {
	return a.UserID == b.UserID && a.Status == b.Status && a.Total == b.Total &&
		len(a.Lines) == len(b.Lines) && (len(a.Lines) == 0 || slices.Equal(a.Lines, b.Lines))
}

// event is one order event: its short type and the union of the fields of
// the four event payloads (the JSON tags are the wire names).
type event struct {
	Type      string `json:"-"`
	UserID    string `json:"user_id,omitempty"`
	ProductID int64  `json:"product_id,omitempty"`
	Quantity  int64  `json:"quantity,omitempty"`
	UnitPrice int64  `json:"unit_price,omitempty"`
	From      string `json:"from,omitempty"`
	To        string `json:"to,omitempty"`
}

// The order's event types, by their wire names.
var eventTypes = map[string]string{
	"order.OrderCreated":  "OrderCreated",
	"order.LineAdded":     "LineAdded",
	"order.LineRemoved":   "LineRemoved",
	"order.StatusChanged": "StatusChanged",
}

// decodeEventData reads an event's data: fields other than the event
// type's own make it unreadable.
func decodeEventData(typ string, data json.RawMessage) (event, error) {
	short, ok := eventTypes[typ]
	if !ok {
		return event{}, fmt.Errorf("%q is not an order event type", typ)
	}
	var fields []string
	switch short {
	case "OrderCreated":
		fields = []string{"user_id"}
	case "LineAdded":
		fields = []string{"product_id", "quantity", "unit_price"}
	case "LineRemoved":
		fields = []string{"product_id"}
	case "StatusChanged":
		fields = []string{"from", "to"}
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return event{}, fmt.Errorf("data of %s: %w", typ, err)
	}
	for k := range raw {
		if !slices.Contains(fields, k) {
			return event{}, fmt.Errorf("data of %s has the field %q, which is not one of %v", typ, k, fields)
		}
	}
	e := event{Type: short}
	if err := json.Unmarshal(data, &e); err != nil {
		return event{}, fmt.Errorf("data of %s: %w", typ, err)
	}
	return e, nil
}

func (e event) String() string {
	b, _ := json.Marshal(e)
	return e.Type + string(b)
}

// apply changes s by e, as the order's apply functions do.
func (s *orderState) apply(e event) {
	switch e.Type {
	case "OrderCreated":
		s.UserID, s.Status = e.UserID, "new"
	case "LineAdded":
		if i := s.line(e.ProductID); i >= 0 {
			s.Lines[i].Quantity += e.Quantity
		} else {
			s.Lines = append(s.Lines, orderLine{ProductID: e.ProductID, Quantity: e.Quantity, UnitPrice: e.UnitPrice})
		}
		s.Total += e.Quantity * e.UnitPrice
	case "LineRemoved":
		if i := s.line(e.ProductID); i >= 0 {
			s.Total -= s.Lines[i].Quantity * s.Lines[i].UnitPrice
			if s.Lines = slices.Delete(s.Lines, i, i+1); len(s.Lines) == 0 {
				s.Lines = nil
			}
		}
	case "StatusChanged":
		s.Status = e.To
	}
}

// outcome is what a command's result must say.
type outcome struct {
	Status  string
	Version int64
	Code    string
	Events  []event // the events it appends (accepted only)
}

func (o outcome) String() string {
	if o.Code != "" {
		return fmt.Sprintf("%s %s at version %d", o.Status, o.Code, o.Version)
	}
	return fmt.Sprintf("%s at version %d", o.Status, o.Version)
}

// model is one order as the reference model sees it.
type model struct {
	version int64
	state   orderState
	recent  []string // ids of the last commands that produced events, oldest first
}

func newModel() *model { return &model{version: -1} }

// remember adds a command id to the idempotency window. A command's events
// are consecutive, so only the latest id can repeat.
func (m *model) remember(id string) {
	if n := len(m.recent); n > 0 && m.recent[n-1] == id {
		return
	}
	m.recent = append(m.recent, id)
	if len(m.recent) > IdempotencyWindow {
		m.recent = m.recent[1:]
	}
}

// replay applies a committed event produced by command causation.
func (m *model) replay(e event, causation string) {
	m.state.apply(e)
	m.version++
	if causation != "" {
		m.remember(causation)
	}
}

// decide predicts the outcome of cmd, a decoded command addressed to this
// aggregate, in the order documented in docs/formats.md and the order
// package: a remembered id is a duplicate; then expected_version; then the
// command type; then its data; then the order's rules. An accepted command
// changes the model.
func (m *model) decide(cmd *aggregates.Command) outcome {
	id := cmd.ID.String()
	if slices.Contains(m.recent, id) {
		return outcome{Status: statusDuplicate, Version: m.version}
	}
	if cmd.ExpectedVersion != nil && *cmd.ExpectedVersion != m.version {
		return m.reject(aggregates.CodeConcurrencyConflict)
	}
	short, ok := strings.CutPrefix(cmd.Type, "order.")
	if !ok && strings.Contains(cmd.Type, ".") {
		short = ""
	}
	var e event
	var code string
	var err error
	switch short {
	case "CreateOrder":
		var c struct {
			UserID string `json:"user_id"`
		}
		if err = strictJSON(cmd.Data, &c); err == nil {
			e, code = m.create(c.UserID)
		}
	case "AddLine":
		var c orderLine
		if err = strictJSON(cmd.Data, &c); err == nil {
			e, code = m.addLine(c)
		}
	case "RemoveLine":
		var c struct {
			ProductID int64 `json:"product_id"`
		}
		if err = strictJSON(cmd.Data, &c); err == nil {
			e, code = m.removeLine(c.ProductID)
		}
	case "ChangeStatus":
		var c struct {
			Status string `json:"status"`
		}
		if err = strictJSON(cmd.Data, &c); err == nil {
			e, code = m.changeStatus(c.Status)
		}
	default:
		return outcome{Status: statusInvalid, Version: m.version, Code: aggregates.CodeUnknownCommand}
	}
	if err != nil {
		return outcome{Status: statusInvalid, Version: m.version, Code: aggregates.CodeMalformed}
	}
	if code != "" {
		return m.reject(code)
	}
	m.replay(e, id)
	return outcome{Status: statusAccepted, Version: m.version, Events: []event{e}}
}

func (m *model) reject(code string) outcome {
	return outcome{Status: statusRejected, Version: m.version, Code: code}
}

// strictJSON decodes a command's data as the processor does: null or absent
// is the empty payload, unknown fields and trailing data are errors.
func strictJSON(data json.RawMessage, v any) error {
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func (m *model) create(user string) (event, string) {
	switch {
	case m.state.exists():
		return event{}, "already_exists"
	case user == "":
		return event{}, "invalid_user"
	}
	return event{Type: "OrderCreated", UserID: user}, ""
}

func (m *model) mustBeNew() string {
	switch {
	case !m.state.exists():
		return "not_found"
	case m.state.Status != "new":
		return "not_new"
	}
	return ""
}

func (m *model) addLine(c orderLine) (event, string) {
	if code := m.mustBeNew(); code != "" {
		return event{}, code
	}
	switch {
	case c.ProductID <= 0:
		return event{}, "invalid_product"
	case c.Quantity <= 0:
		return event{}, "invalid_quantity"
	case c.UnitPrice < 0:
		return event{}, "invalid_price"
	}
	var have int64
	if i := m.state.line(c.ProductID); i >= 0 {
		if m.state.Lines[i].UnitPrice != c.UnitPrice {
			return event{}, "invalid_price"
		}
		have = m.state.Lines[i].Quantity
	} else if len(m.state.Lines) >= maxLines {
		return event{}, "too_many_lines"
	}
	if c.Quantity > maxAmount-have ||
		c.UnitPrice > 0 && (have+c.Quantity > maxAmount/c.UnitPrice || c.Quantity*c.UnitPrice > maxAmount-m.state.Total) {
		return event{}, "amount_too_large"
	}
	return event{Type: "LineAdded", ProductID: c.ProductID, Quantity: c.Quantity, UnitPrice: c.UnitPrice}, ""
}

func (m *model) removeLine(product int64) (event, string) {
	if code := m.mustBeNew(); code != "" {
		return event{}, code
	}
	if m.state.line(product) < 0 {
		return event{}, "line_not_found"
	}
	return event{Type: "LineRemoved", ProductID: product}, ""
}

// canBecome is the order's status graph: new → confirmed → paid → shipped,
// and cancelled from any status before shipped.
func canBecome(from, to string) bool {
	switch to {
	case "confirmed":
		return from == "new"
	case "paid":
		return from == "confirmed"
	case "shipped":
		return from == "paid"
	case "cancelled":
		return from == "new" || from == "confirmed" || from == "paid"
	}
	return false
}

func (m *model) changeStatus(to string) (event, string) {
	switch {
	case !m.state.exists():
		return event{}, "not_found"
	case !slices.Contains([]string{"new", "confirmed", "paid", "shipped", "cancelled"}, to):
		return event{}, "unknown_status"
	case !canBecome(m.state.Status, to):
		return event{}, "invalid_transition"
	case to == "shipped" && len(m.state.Lines) == 0:
		return event{}, "no_lines"
	}
	return event{Type: "StatusChanged", From: m.state.Status, To: to}, ""
}
