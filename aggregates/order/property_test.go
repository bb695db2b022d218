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

// apply returns whether the model accepts c, applying it if so.
func (m *model) apply(c any) bool {
	switch c := c.(type) {
	case order.CreateOrder:
		if m.exists || c.UserID == "" {
			return false
		}
		m.exists, m.user, m.status = true, c.UserID, order.StatusNew
	case order.AddLine:
		if !m.exists || m.status != order.StatusNew || c.ProductID <= 0 || c.Quantity <= 0 || c.UnitPrice < 0 {
			return false
		}
		if i := m.idx(c.ProductID); i >= 0 {
			if m.lines[i].UnitPrice != c.UnitPrice {
				return false
			}
			m.lines[i].Quantity += c.Quantity
		} else {
			m.lines = append(m.lines, order.Line(c))
		}
	case order.RemoveLine:
		i := m.idx(c.ProductID)
		if !m.exists || m.status != order.StatusNew || i < 0 {
			return false
		}
		m.lines = slices.Delete(m.lines, i, i+1)
	case order.ChangeStatus:
		next := map[order.Status][]order.Status{
			order.StatusNew: {order.StatusConfirmed, order.StatusCancelled}, order.StatusConfirmed: {order.StatusPaid, order.StatusCancelled},
			order.StatusPaid: {order.StatusShipped, order.StatusCancelled},
		}
		if !m.exists || !slices.Contains(next[m.status], c.Status) || (c.Status == order.StatusShipped && len(m.lines) == 0) {
			return false
		}
		m.status = c.Status
	}
	return true
}

func genCommand() *rapid.Generator[any] {
	return rapid.OneOf(
		rapid.Map(rapid.SampledFrom([]string{"", "u-1", "u-2"}), func(u string) any { return order.CreateOrder{UserID: u} }),
		rapid.Custom(func(t *rapid.T) any {
			return order.AddLine{ProductID: rapid.Int64Range(0, 5).Draw(t, "product"), Quantity: rapid.Int64Range(-1, 4).Draw(t, "qty"),
				UnitPrice: 100 * rapid.Int64Range(-1, 3).Draw(t, "price")}
		}),
		rapid.Map(rapid.Int64Range(1, 5), func(p int64) any { return order.RemoveLine{ProductID: p} }),
		rapid.Map(rapid.SampledFrom([]order.Status{order.StatusNew, order.StatusConfirmed, order.StatusPaid, order.StatusShipped, order.StatusCancelled, "lost"}),
			func(s order.Status) any { return order.ChangeStatus{Status: s} }),
	)
}

func TestOrderAgainstModel(t *testing.T) {
	def := order.Definition()
	rapid.Check(t, func(t *rapid.T) {
		root := def.New("o-1")
		var m model
		var history []aggregates.Event
		var states []order.State // state after event v
		var sent []aggregates.Command
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		steps := rapid.IntRange(1, 60).Draw(t, "steps")
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
			payload := genCommand().Draw(t, "command")
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
			wantOK := !conflict && mm.apply(payload)
			evs, err := root.Execute(&cmd, now)
			if gotOK := err == nil; gotOK != wantOK {
				t.Fatalf("step %d: %T%+v accepted=%v, model says %v (err %v)", i, payload, payload, gotOK, wantOK, err)
			}
			if conflict && !errors.Is(err, aggregates.ErrConcurrencyConflict) {
				t.Fatalf("step %d: want a concurrency conflict, got %v", i, err)
			}
			if wantOK {
				m = mm
				sent = append(sent, cmd)
				history = append(history, evs...)
				for range evs {
					st := root.State()
					states = append(states, st.Clone())
				}
			}
			s := root.State()
			if s.Status != m.status || s.UserID != m.user || !reflect.DeepEqual(slices.Clone(s.Lines), slices.Clone(m.lines)) && !(len(s.Lines) == 0 && len(m.lines) == 0) {
				t.Fatalf("step %d: state %+v, model %+v", i, s, m)
			}
			if s.Total != m.total() {
				t.Fatalf("step %d: total %d, lines sum to %d", i, s.Total, m.total())
			}
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
