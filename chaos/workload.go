package chaos

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/oklog/ulid/v2"

	"github.com/chronicle-es/chronicle/aggregates"
)

// Kinds of records a Workload sends (the chaos-kind header carries them).
const (
	SendCommand        = "command"         // the next command of an order, to its owner partition
	SendWrongPartition = "wrong-partition" // the same, to another partition: it must be forwarded
	SendResend         = "resend"          // an earlier command of an order again, same id and bytes
	SendMalformed      = "malformed"       // not a readable command, no readable id
	SendMalformedID    = "malformed-id"    // unreadable, but its id can be read
	SendKeyMismatch    = "key-mismatch"    // record key is another order's id
	SendUnknownType    = "unknown-type"    // a type the order aggregate does not have
	SendBadData        = "bad-data"        // a known type with an unknown data field
)

// Send is one record a Workload wants produced to the commands topic.
type Send struct {
	Key   []byte
	Value []byte
	// Partition is -1 for the owner partition (murmur2 of the key), or
	// an explicit partition.
	Partition int32
	Kind      string
}

// Workload generates order commands for a chaos run: orders created, given
// lines, confirmed, paid, shipped or cancelled, mixed with commands the
// order rejects, concurrency conflicts, resends of earlier commands,
// wrongly partitioned records and bad records. It keeps its own belief of
// each order (the reference model applied in send order) only to choose
// mostly sensible commands: the checker never uses it, it judges the log.
// A Workload is not safe for concurrent use.
type Workload struct {
	rng        *rand.Rand
	entropy    *ulid.MonotonicEntropy
	partitions int32
	active     []*plan
	nextOrder  int
	counts     map[string]int
}

// plan is one order the workload is driving.
type plan struct {
	id     string
	belief *model
	sent   [][]byte // well-formed commands sent, for resends
}

// NewWorkload returns a workload driving active orders at a time over the
// given number of partitions, deterministic for a seed.
func NewWorkload(seed uint64, active int, partitions int32) *Workload {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	w := &Workload{rng: rng, entropy: ulid.Monotonic(rand.NewChaCha8(key), 0), partitions: partitions, counts: map[string]int{}}
	for range active {
		w.active = append(w.active, w.newPlan())
	}
	return w
}

func (w *Workload) newPlan() *plan {
	w.nextOrder++
	return &plan{id: fmt.Sprintf("o-%06d", w.nextOrder), belief: newModel()}
}

// Orders returns how many orders the workload has started.
func (w *Workload) Orders() int { return w.nextOrder }

// Counts returns how many records of each kind it generated.
func (w *Workload) Counts() map[string]int { return w.counts }

// Next returns the next record to send.
func (w *Workload) Next() Send {
	s := w.next()
	w.counts[s.Kind]++
	return s
}

func (w *Workload) next() Send {
	pl := w.active[w.rng.IntN(len(w.active))]
	r := w.rng.Float64()
	switch {
	case r < 0.01:
		bodies := []string{`{"id":"01KAPQ0S2A3R579X`, `not json at all`, `{"type":"order.AddLine","aggregate_id":"` + pl.id + `"`, `[1,2,3]`, `{}`}
		return Send{Key: []byte(pl.id), Value: []byte(bodies[w.rng.IntN(len(bodies))]), Partition: w.somePartition(), Kind: SendMalformed}
	case r < 0.02:
		v := fmt.Sprintf(`{"id":%q,"type":"order.AddLine","aggregate_id":%q,"data":[1]}`, w.newID(), pl.id)
		return Send{Key: []byte(pl.id), Value: []byte(v), Partition: w.somePartition(), Kind: SendMalformedID}
	case r < 0.03:
		other := w.active[w.rng.IntN(len(w.active))].id
		if other == pl.id {
			other += "-x"
		}
		return Send{Key: []byte(other), Value: w.encode(pl.id, "order.ChangeStatus", map[string]any{"status": "confirmed"}, nil), Partition: w.somePartition(), Kind: SendKeyMismatch}
	case r < 0.035:
		v := w.encode(pl.id, "order.Teleport", map[string]any{"to": "mars"}, nil)
		w.decide(pl, v)
		return Send{Key: []byte(pl.id), Value: v, Partition: -1, Kind: SendUnknownType}
	case r < 0.04:
		v := w.encode(pl.id, "order.AddLine", map[string]any{"product_id": 1, "quantitiy": 1, "unit_price": 100}, nil)
		w.decide(pl, v)
		return Send{Key: []byte(pl.id), Value: v, Partition: -1, Kind: SendBadData}
	case r < 0.08 && len(pl.sent) > 0:
		v := pl.sent[w.rng.IntN(len(pl.sent))]
		w.decide(pl, v)
		part := int32(-1)
		if w.rng.IntN(5) == 0 {
			part = w.wrongPartition(pl.id)
		}
		return Send{Key: []byte(pl.id), Value: v, Partition: part, Kind: SendResend}
	}
	v := w.nextCommand(pl)
	pl.sent = append(pl.sent, v)
	w.decide(pl, v)
	s := Send{Key: []byte(pl.id), Value: v, Partition: -1, Kind: SendCommand}
	if w.rng.Float64() < 0.03 {
		s.Partition, s.Kind = w.wrongPartition(pl.id), SendWrongPartition
	}
	if st := pl.belief.state.Status; st == "shipped" || st == "cancelled" {
		// Done: a fresh order takes its place (its later commands would
		// all be rejected).
		for i := range w.active {
			if w.active[i] == pl {
				w.active[i] = w.newPlan()
			}
		}
	}
	return s
}

func (w *Workload) decide(pl *plan, v []byte) {
	if cmd, err := aggregates.DecodeCommand(v); err == nil {
		pl.belief.decide(&cmd)
	}
}

// somePartition is -1 (the owner) most of the time, else a random one.
func (w *Workload) somePartition() int32 {
	if w.rng.IntN(3) == 0 {
		return w.rng.Int32N(w.partitions)
	}
	return -1
}

func (w *Workload) wrongPartition(id string) int32 {
	o := owner([]byte(id), w.partitions)
	return (o + 1 + w.rng.Int32N(w.partitions-1)) % w.partitions
}

func (w *Workload) newID() string { return ulid.MustNew(ulid.Now(), w.entropy).String() }

func (w *Workload) encode(id, typ string, data any, expected *int64) []byte {
	raw, err := json.Marshal(data)
	if err != nil {
		panic(err) // the workload's own literals
	}
	cmd := aggregates.Command{ID: ulid.MustParse(w.newID()), Type: typ, AggregateID: id, ExpectedVersion: expected,
		Data: raw, Metadata: aggregates.Metadata{Actor: "chaos"}}
	v, err := cmd.Encode()
	if err != nil {
		panic(err)
	}
	return v
}

// nextCommand chooses an order's next command from the workload's belief:
// mostly what moves the order along, sometimes what its rules refuse.
func (w *Workload) nextCommand(pl *plan) []byte {
	m := pl.belief
	var expected *int64
	switch x := w.rng.Float64(); {
	case x < 0.10:
		v := m.version
		expected = &v
	case x < 0.13:
		v := m.version + 1 // a concurrency conflict, unless the belief is behind
		expected = &v
	}
	cmd := func(typ string, data any) []byte { return w.encode(pl.id, typ, data, expected) }
	addLine := func() []byte {
		product := int64(1 + w.rng.IntN(8))
		q, price := int64(1+w.rng.IntN(3)), product*100
		switch x := w.rng.Float64(); {
		case x < 0.04:
			price++ // invalid_price when the product is on the order already
		case x < 0.07:
			q = 0 // invalid_quantity
		}
		return cmd("order.AddLine", map[string]any{"product_id": product, "quantity": q, "unit_price": price})
	}
	status := func(s string) []byte { return cmd("order.ChangeStatus", map[string]any{"status": s}) }
	r := w.rng.Float64()
	switch m.state.Status {
	case "":
		switch {
		case r < 0.92:
			return cmd("order.CreateOrder", map[string]any{"user_id": fmt.Sprintf("u-%d", w.rng.IntN(97))})
		case r < 0.96:
			return cmd("order.CreateOrder", map[string]any{"user_id": ""})
		}
		return addLine() // not_found
	case "new":
		switch {
		case r < 0.55:
			return addLine()
		case r < 0.65:
			product := int64(99) // line_not_found
			if len(m.state.Lines) > 0 && w.rng.IntN(5) > 0 {
				product = m.state.Lines[w.rng.IntN(len(m.state.Lines))].ProductID
			}
			return cmd("order.RemoveLine", map[string]any{"product_id": product})
		case r < 0.80:
			if len(m.state.Lines) == 0 && w.rng.IntN(10) > 0 {
				return addLine()
			}
			return status("confirmed")
		case r < 0.83:
			return status("cancelled")
		case r < 0.87:
			return status("shipped") // invalid_transition
		case r < 0.90:
			return cmd("order.CreateOrder", map[string]any{"user_id": "u-again"}) // already_exists
		case r < 0.92:
			return status("lost") // unknown_status
		}
		return addLine()
	case "confirmed":
		switch {
		case r < 0.75:
			return status("paid")
		case r < 0.85:
			return status("cancelled")
		case r < 0.93:
			return addLine() // not_new
		}
		return status("shipped") // invalid_transition
	case "paid":
		switch {
		case len(m.state.Lines) == 0 && r < 0.7:
			return status("cancelled")
		case r < 0.85:
			return status("shipped") // no_lines if it has none
		case r < 0.93:
			return status("cancelled")
		}
		return status("confirmed") // invalid_transition
	}
	return status("paid") // invalid_transition from shipped or cancelled
}
