package order_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
)

// model is an independent, deliberately naive model of an order.
type model struct {
	exists bool
	user   string
	status order.Status
	lines  []order.Line
}

func (m *model) idx(p int64) int {
	return slices.IndexFunc(m.lines, func(l order.Line) bool { return l.ProductID == p })
}

func (m *model) total() (t int64) {
	for _, l := range m.lines {
		t += l.Quantity * l.UnitPrice
	}
	return t
}

// apply returns the code the order must reject c with ("" to accept it),
// applying c if accepted. It checks the rules in the order the handlers do,
// so that the first broken rule names the code.
func (m *model) apply(c any) string {
	switch c := c.(type) {
	case order.CreateOrder:
		switch {
		case m.exists:
			return order.CodeAlreadyExists
		case c.UserID == "":
			return order.CodeInvalidUser
		}
		m.exists, m.user, m.status = true, c.UserID, order.StatusNew
	case order.AddLine:
		i := m.idx(c.ProductID)
		switch {
		case !m.exists:
			return order.CodeNotFound
		case m.status != order.StatusNew:
			return order.CodeNotNew
		case c.ProductID <= 0:
			return order.CodeInvalidProduct
		case c.Quantity <= 0:
			return order.CodeInvalidQuantity
		case c.UnitPrice < 0:
			return order.CodeInvalidPrice
		case i >= 0 && m.lines[i].UnitPrice != c.UnitPrice:
			return order.CodeInvalidPrice
		case i >= 0:
			m.lines[i].Quantity += c.Quantity
		default:
			m.lines = append(m.lines, order.Line(c))
		}
	case order.RemoveLine:
		i := m.idx(c.ProductID)
		switch {
		case !m.exists:
			return order.CodeNotFound
		case m.status != order.StatusNew:
			return order.CodeNotNew
		case i < 0:
			return order.CodeLineNotFound
		}
		m.lines = slices.Delete(m.lines, i, i+1)
	case order.ChangeStatus:
		next := map[order.Status][]order.Status{
			order.StatusNew: {order.StatusConfirmed, order.StatusCancelled}, order.StatusConfirmed: {order.StatusPaid, order.StatusCancelled},
			order.StatusPaid: {order.StatusShipped, order.StatusCancelled},
		}
		known := []order.Status{order.StatusNew, order.StatusConfirmed, order.StatusPaid, order.StatusShipped, order.StatusCancelled}
		switch {
		case !m.exists:
			return order.CodeNotFound
		case !slices.Contains(known, c.Status):
			return order.CodeUnknownStatus
		case !slices.Contains(next[m.status], c.Status):
			return order.CodeInvalidTransition
		case c.Status == order.StatusShipped && len(m.lines) == 0:
			return order.CodeNoLines
		}
		m.status = c.Status
	}
	return ""
}

// outcome names what Execute did: "" for accepted, the rejection code, or
// the error.
func outcome(err error) string {
	var r *aggregates.Rejection
	switch {
	case err == nil:
		return ""
	case errors.As(err, &r):
		return r.Code
	default:
		return "error: " + err.Error()
	}
}

// genCommand draws any order command, valid or not. Half of the status
// changes name the status after the current one in the life cycle (or
// cancelled), so that runs reach paid, shipped and cancelled orders often.
func genCommand(current order.Status) *rapid.Generator[any] {
	next := map[order.Status]order.Status{
		"": order.StatusConfirmed, order.StatusNew: order.StatusConfirmed, order.StatusConfirmed: order.StatusPaid,
		order.StatusPaid: order.StatusShipped, order.StatusShipped: order.StatusCancelled, order.StatusCancelled: order.StatusNew,
	}[current]
	anyStatus := rapid.SampledFrom([]order.Status{order.StatusNew, order.StatusConfirmed, order.StatusPaid, order.StatusShipped, order.StatusCancelled, "lost"})
	likely := rapid.SampledFrom([]order.Status{next, next, order.StatusCancelled})
	return rapid.OneOf(
		rapid.Map(rapid.SampledFrom([]string{"", "u-1", "u-2"}), func(u string) any { return order.CreateOrder{UserID: u} }),
		rapid.Custom(func(t *rapid.T) any {
			// Valid values first: rapid favours the start of a list.
			return order.AddLine{
				ProductID: rapid.SampledFrom([]int64{1, 2, 3, 4, 5, 0, -1}).Draw(t, "product"),
				Quantity:  rapid.SampledFrom([]int64{1, 2, 3, 0, -1}).Draw(t, "qty"),
				UnitPrice: rapid.SampledFrom([]int64{100, 200, 0, 300, -100}).Draw(t, "price"),
			}
		}),
		rapid.Map(rapid.Int64Range(1, 5), func(p int64) any { return order.RemoveLine{ProductID: p} }),
		rapid.Map(anyStatus, func(s order.Status) any { return order.ChangeStatus{Status: s} }),
		rapid.Map(likely, func(s order.Status) any { return order.ChangeStatus{Status: s} }),
	)
}

func TestOrderAgainstModel(t *testing.T) {
	def := order.Definition()
	rapid.Check(t, func(t *rapid.T) {
		root := def.New("o-1")
		var m model
		var history []aggregates.Event
		var states []order.State // state after event v
		var sent, refused []aggregates.Command
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		steps := rapid.IntRange(20, 120).Draw(t, "steps")
		for i := range steps {
			now = now.Add(time.Minute)
			var cmd aggregates.Command
			if len(sent) > 0 && rapid.IntRange(0, 9).Draw(t, "resend") == 0 {
				// An accepted command sent again, within the window: a
				// duplicate that changes nothing.
				recent := sent[max(0, len(sent)-aggregates.DefaultWindow):]
				cmd = recent[rapid.IntRange(0, len(recent)-1).Draw(t, "which")]
				before := root.Version()
				if _, err := root.Execute(&cmd, now); !errors.Is(err, aggregates.ErrDuplicateCommand) || root.Version() != before {
					t.Fatalf("step %d: resent command: %v, version %d -> %d", i, err, before, root.Version())
				}
				continue
			}
			if len(refused) > 0 && rapid.IntRange(0, 9).Draw(t, "retry") == 0 {
				// A refused command is not remembered: sent again, it is
				// decided again, against the state as it is now.
				k := rapid.IntRange(0, len(refused)-1).Draw(t, "which refused")
				cmd = refused[k]
				cmd.ExpectedVersion = nil
				payload, err := def.DecodeCommandData(&cmd)
				if err != nil {
					t.Fatal(err)
				}
				mm := m
				mm.lines = slices.Clone(m.lines)
				want := mm.apply(payload)
				wantOK := want == ""
				evs, err := root.Execute(&cmd, now)
				if got := outcome(err); got != want {
					t.Fatalf("step %d: retried %T%+v: %q, model says %q", i, payload, payload, got, want)
				}
				if wantOK {
					m = mm
					sent = append(sent, cmd)
					refused = slices.Delete(refused, k, k+1)
					history = append(history, evs...)
					for range evs {
						st := root.State()
						states = append(states, st.Clone())
					}
				}
				checkState(t, i, root, &m)
				continue
			}
			payload := genCommand(m.status).Draw(t, "command")
			var err error
			cmd, err = def.NewCommand("o-1", payload, aggregates.Metadata{Actor: "prop"})
			if err != nil {
				t.Fatal(err)
			}
			if rapid.IntRange(0, 9).Draw(t, "expect") == 0 {
				v := root.Version() + int64(rapid.IntRange(-1, 1).Draw(t, "skew"))
				cmd.ExpectedVersion = &v
			}
			conflict := cmd.ExpectedVersion != nil && *cmd.ExpectedVersion != root.Version()
			mm := m
			mm.lines = slices.Clone(m.lines)
			want := "conflict"
			if !conflict {
				want = mm.apply(payload)
			}
			wantOK := want == ""
			evs, err := root.Execute(&cmd, now)
			if conflict {
				if !errors.Is(err, aggregates.ErrConcurrencyConflict) {
					t.Fatalf("step %d: want a concurrency conflict, got %v", i, err)
				}
			} else if got := outcome(err); got != want {
				t.Fatalf("step %d: %T%+v: %q, model says %q", i, payload, payload, got, want)
			}
			if wantOK {
				m = mm
				sent = append(sent, cmd)
				history = append(history, evs...)
				for range evs {
					st := root.State()
					states = append(states, st.Clone())
				}
			} else {
				refused = append(refused, cmd)
			}
			checkState(t, i, root, &m)
		}
		// A snapshot restores the state exactly, and the same commands
		// are still duplicates.
		snap, err := root.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		restored := def.New("o-1")
		if err := restored.UnmarshalSnapshot(snap); err != nil {
			t.Fatal(err)
		}
		if restored.Version() != root.Version() || !reflect.DeepEqual(restored.State(), root.State()) {
			t.Fatalf("snapshot gives v%d %#v, live v%d %#v", restored.Version(), restored.State(), root.Version(), root.State())
		}
		// Replaying the events through the codec reproduces the state.
		replayed := def.New("o-1")
		for i := range history {
			b, err := history[i].Encode()
			if err != nil {
				t.Fatal(err)
			}
			e, err := def.DecodeEvent(b)
			if err != nil {
				t.Fatal(err)
			}
			if err := replayed.Apply(&e); err != nil {
				t.Fatalf("replaying event %d: %v", i, err)
			}
		}
		if replayed.Version() != root.Version() || !reflect.DeepEqual(replayed.State(), root.State()) {
			t.Fatalf("replay gives v%d %+v, live v%d %+v", replayed.Version(), replayed.State(), root.Version(), root.State())
		}
		// The state at version N is the state after the first N+1 events.
		if len(history) > 0 {
			n := rapid.IntRange(0, len(history)-1).Draw(t, "at")
			at := def.New("o-1")
			if err := aggregates.Rebuild(at, history, aggregates.UpToVersion(int64(n))); err != nil {
				t.Fatal(err)
			}
			if at.Version() != int64(n) || !reflect.DeepEqual(at.State(), states[n]) {
				t.Fatalf("at version %d: %+v, want %+v", n, at.State(), states[n])
			}
		}
	})
}

// checkState asserts the order agrees with the model and keeps its
// invariants: one line per product, positive quantities, an exact total and a
// known status.
func checkState(t *rapid.T, step int, root *aggregates.Root[order.State], m *model) {
	s := root.State()
	if s.Status != m.status || s.UserID != m.user || !reflect.DeepEqual(s.Lines, m.lines) && !(len(s.Lines) == 0 && len(m.lines) == 0) {
		t.Fatalf("step %d: state %+v, model %+v", step, s, m)
	}
	if len(s.Lines) == 0 && s.Lines != nil {
		t.Fatalf("step %d: no lines is an empty slice, not nil (snapshots would read it back differently)", step)
	}
	var sum int64
	seen := map[int64]bool{}
	for _, l := range s.Lines {
		if seen[l.ProductID] || l.Quantity <= 0 || l.UnitPrice < 0 {
			t.Fatalf("step %d: bad line %+v in %+v", step, l, s.Lines)
		}
		seen[l.ProductID] = true
		sum += l.Quantity * l.UnitPrice
	}
	if s.Total != sum || s.Total != m.total() {
		t.Fatalf("step %d: total %d, lines sum to %d, model %d", step, s.Total, sum, m.total())
	}
	if m.exists != s.Status.Known() {
		t.Fatalf("step %d: status %q for an order that exists: %v", step, s.Status, m.exists)
	}
}
