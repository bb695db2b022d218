package aggregates

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"time"
)

type gauge struct{ Value float64 }

type (
	setGauge struct {
		V float64 `json:"v"`
	}
	gaugeSet struct {
		V float64 `json:"v"`
	}
)

func TestExecuteEncodedRefusesUnencodableDataAndChangesNothing(t *testing.T) {
	def := MustDefine("gauge",
		When("Set", func(s *gauge, e gaugeSet) { s.Value = e.V }),
		Handle("Set", func(_ gauge, c setGauge) ([]any, error) { return []any{gaugeSet(c)}, nil }),
	)
	g := def.New("g-1")
	now := time.Unix(1_700_000_000, 0).UTC()
	cmd, err := def.NewCommand("g-1", setGauge{V: 1.5}, Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := g.ExecuteEncoded(&cmd, now)
	if err != nil || len(d.Events) != 1 || len(d.Encoded) != 1 {
		t.Fatalf("ExecuteEncoded = %+v, %v", d, err)
	}
	if want, _ := d.Events[0].Encode(); !bytes.Equal(d.Encoded[0], want) {
		t.Errorf("Encoded[0] differs from Events[0].Encode()")
	}
	if want, _ := g.MarshalState(); !bytes.Equal(d.State, want) {
		t.Errorf("State %s differs from MarshalState %s", d.State, want)
	}
	// NaN cannot be encoded: rejected, nothing changes.
	bad := cmd
	bad.ID, _ = NewID(now)
	bad.Data = []byte(`{"v":0}`)
	def2 := MustDefine("gauge",
		When("Set", func(s *gauge, e gaugeSet) { s.Value = e.V }),
		Handle("Set", func(_ gauge, c setGauge) ([]any, error) { return []any{gaugeSet{V: math.NaN()}}, nil }),
	)
	h := def2.New("g-1")
	if _, err := h.ExecuteEncoded(&bad, now); !errors.Is(err, ErrUnencodable) {
		t.Fatalf("NaN event: %v, want ErrUnencodable", err)
	}
	if h.Version() != -1 || len(h.Changes()) != 0 {
		t.Fatalf("a refused command changed the aggregate: version %d, %d changes", h.Version(), len(h.Changes()))
	}
	if r := ResultFor(&bad, "gauge", h.Version(), nil, &EncodeError{What: "event", Err: errors.New("x")}); r.Status != StatusRejected || r.Code != CodeUnencodable {
		t.Fatalf("ResultFor an EncodeError = %s %s", r.Status, r.Code)
	}
}
