package order_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/topics"
)

// These examples are the ones in docs/formats.md: the documents there are
// what this code writes. Ids are fixed so the output is stable; in real use
// the sender chooses command ids and Execute stamps each event with a new
// ULID.

var (
	exampleCommandID = ulid.MustParse("01KAPQ0S2A3R579XDB4SD4Q091")
	exampleEventID   = ulid.MustParse("01KAPQ0SJ978TJB2ZDJ0M1ZRRE")
	exampleTime      = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
)

func printJSON(b []byte) {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		fmt.Println("invalid JSON:", err)
		return
	}
	fmt.Println(out.String())
}

// exampleOrder returns order o-42 after CreateOrder (version 0), and the
// AddLine command a client sends next.
func exampleOrder() (*aggregates.Root[order.State], aggregates.Command) {
	def := order.Definition()
	o := def.New("o-42")
	create, _ := def.NewCommand("o-42", order.CreateOrder{UserID: "user-17"}, aggregates.Metadata{})
	if _, err := o.Execute(&create, exampleTime); err != nil {
		panic(err)
	}
	o.ClearChanges()
	cmd, err := def.NewCommand("o-42", order.AddLine{ProductID: 512, Quantity: 2, UnitPrice: 1999},
		aggregates.Metadata{CorrelationID: "checkout-7f3a", Actor: "user-17", Timestamp: exampleTime})
	if err != nil {
		panic(err)
	}
	cmd.ID = exampleCommandID
	expected := int64(0)
	cmd.ExpectedVersion = &expected
	return o, cmd
}

// A command as a producer writes it to the commands topic, keyed by the
// aggregate id.
func Example_command() {
	_, cmd := exampleOrder()
	b, err := cmd.Encode()
	if err != nil {
		panic(err)
	}
	fmt.Printf("key: %s\n", cmd.AggregateID)
	printJSON(b)
	// Output:
	// key: o-42
	// {
	//   "id": "01KAPQ0S2A3R579XDB4SD4Q091",
	//   "type": "order.AddLine",
	//   "aggregate_id": "o-42",
	//   "expected_version": 0,
	//   "data": {
	//     "product_id": 512,
	//     "quantity": 2,
	//     "unit_price": 1999
	//   },
	//   "metadata": {
	//     "correlation_id": "checkout-7f3a",
	//     "actor": "user-17",
	//     "timestamp": "2026-11-23T10:00:00Z"
	//   }
	// }
}

// The event the command produces, as the processor writes it to the events
// topic.
func Example_event() {
	o, cmd := exampleOrder()
	events, err := o.Execute(&cmd, exampleTime.Add(1500*time.Millisecond))
	if err != nil {
		panic(err)
	}
	events[0].ID = exampleEventID
	b, err := events[0].Encode()
	if err != nil {
		panic(err)
	}
	fmt.Printf("key: %s\n", topics.EventKey(cmd.AggregateID, events[0].Version))
	printJSON(b)
	// Output:
	// key: o-42@00000000000000000001
	// {
	//   "specversion": "1.0",
	//   "id": "01KAPQ0SJ978TJB2ZDJ0M1ZRRE",
	//   "type": "order.LineAdded",
	//   "source": "/chronicle/order",
	//   "subject": "o-42",
	//   "time": "2026-11-23T10:00:01.5Z",
	//   "datacontenttype": "application/json",
	//   "aggregatetype": "order",
	//   "aggregateversion": 1,
	//   "schemaversion": 1,
	//   "causationid": "01KAPQ0S2A3R579XDB4SD4Q091",
	//   "correlationid": "checkout-7f3a",
	//   "actor": "user-17",
	//   "data": {
	//     "product_id": 512,
	//     "quantity": 2,
	//     "unit_price": 1999
	//   }
	// }
}

// The answers to commands, as the processor writes them to the results
// topic, keyed by command id.
func Example_results() {
	o, cmd := exampleOrder()
	result := func(cmd aggregates.Command) {
		events, err := o.Execute(&cmd, exampleTime.Add(time.Second))
		for i := range events {
			events[i].ID = exampleEventID
		}
		r := aggregates.ResultFor(&cmd, "order", o.Version(), events, err)
		r.Time = exampleTime.Add(time.Second)
		b, _ := json.Marshal(r)
		fmt.Printf("key: %s\n", r.CommandID)
		printJSON(b)
	}
	fmt.Println("# accepted")
	result(cmd)
	fmt.Println("# duplicate: the same command id again")
	result(cmd)
	fmt.Println("# rejected by the order: it cannot ship before it is paid")
	ship := cmd
	ship.ID, ship.Type, ship.Data, ship.ExpectedVersion = ulid.MustParse("01KAPQ0S2BCT7GN8S8VBHPFBKY"), "order.ChangeStatus", json.RawMessage(`{"status":"shipped"}`), nil
	result(ship)
	fmt.Println("# rejected: expected_version is stale")
	stale := cmd
	stale.ID = ulid.MustParse("01KAPQ0S2CQW5E9F6G7H8J9K0M")
	result(stale)
	fmt.Println("# invalid: the order has no such command")
	unknown := cmd
	unknown.ID, unknown.Type, unknown.ExpectedVersion = ulid.MustParse("01KAPQ0S2DR0VJ3N4P5Q6R7S8T"), "order.Teleport", nil
	result(unknown)
	// Output:
	// # accepted
	// key: 01KAPQ0S2A3R579XDB4SD4Q091
	// {
	//   "command_id": "01KAPQ0S2A3R579XDB4SD4Q091",
	//   "command_type": "order.AddLine",
	//   "aggregate_type": "order",
	//   "aggregate_id": "o-42",
	//   "status": "accepted",
	//   "version": 1,
	//   "event_ids": [
	//     "01KAPQ0SJ978TJB2ZDJ0M1ZRRE"
	//   ],
	//   "correlation_id": "checkout-7f3a",
	//   "time": "2026-11-23T10:00:01Z"
	// }
	// # duplicate: the same command id again
	// key: 01KAPQ0S2A3R579XDB4SD4Q091
	// {
	//   "command_id": "01KAPQ0S2A3R579XDB4SD4Q091",
	//   "command_type": "order.AddLine",
	//   "aggregate_type": "order",
	//   "aggregate_id": "o-42",
	//   "status": "duplicate",
	//   "version": 1,
	//   "correlation_id": "checkout-7f3a",
	//   "time": "2026-11-23T10:00:01Z"
	// }
	// # rejected by the order: it cannot ship before it is paid
	// key: 01KAPQ0S2BCT7GN8S8VBHPFBKY
	// {
	//   "command_id": "01KAPQ0S2BCT7GN8S8VBHPFBKY",
	//   "command_type": "order.ChangeStatus",
	//   "aggregate_type": "order",
	//   "aggregate_id": "o-42",
	//   "status": "rejected",
	//   "version": 1,
	//   "code": "invalid_transition",
	//   "reason": "an order that is new cannot become shipped",
	//   "correlation_id": "checkout-7f3a",
	//   "time": "2026-11-23T10:00:01Z"
	// }
	// # rejected: expected_version is stale
	// key: 01KAPQ0S2CQW5E9F6G7H8J9K0M
	// {
	//   "command_id": "01KAPQ0S2CQW5E9F6G7H8J9K0M",
	//   "command_type": "order.AddLine",
	//   "aggregate_type": "order",
	//   "aggregate_id": "o-42",
	//   "status": "rejected",
	//   "version": 1,
	//   "code": "concurrency_conflict",
	//   "reason": "concurrency conflict on \"o-42\": command expected version 0, aggregate is at version 1; reload the aggregate and retry",
	//   "correlation_id": "checkout-7f3a",
	//   "time": "2026-11-23T10:00:01Z"
	// }
	// # invalid: the order has no such command
	// key: 01KAPQ0S2DR0VJ3N4P5Q6R7S8T
	// {
	//   "command_id": "01KAPQ0S2DR0VJ3N4P5Q6R7S8T",
	//   "command_type": "order.Teleport",
	//   "aggregate_type": "order",
	//   "aggregate_id": "o-42",
	//   "status": "invalid",
	//   "version": 1,
	//   "code": "unknown_command",
	//   "reason": "unknown command type: \"order.Teleport\" is not a command of \"order\" (known: order.AddLine, order.ChangeStatus, order.CreateOrder, order.RemoveLine)",
	//   "correlation_id": "checkout-7f3a",
	//   "time": "2026-11-23T10:00:01Z"
	// }
}

// The latest state of an order, as the processor writes it to the state
// topic, keyed by aggregate id.
func Example_state() {
	o, cmd := exampleOrder()
	if _, err := o.Execute(&cmd, exampleTime); err != nil {
		panic(err)
	}
	b, err := o.MarshalState()
	if err != nil {
		panic(err)
	}
	fmt.Printf("key: %s\n", o.ID())
	printJSON(b)
	// Output:
	// key: o-42
	// {
	//   "aggregate_type": "order",
	//   "aggregate_id": "o-42",
	//   "version": 1,
	//   "state": {
	//     "user_id": "user-17",
	//     "status": "new",
	//     "lines": [
	//       {
	//         "product_id": 512,
	//         "quantity": 2,
	//         "unit_price": 1999
	//       }
	//     ],
	//     "total": 3998
	//   }
	// }
}

// What a sender learns about a command that cannot be read: the processor
// puts this text in the invalid result's reason (code "malformed").
func Example_malformedCommand() {
	_, err := aggregates.DecodeCommand([]byte(`{"id":"01KAPQ0S2ER0VJ3N4P5Q6R7S8V","type":"order.AddLine","expected_version":-5,"data":[512]}`))
	fmt.Println(err)
	// Output:
	// decoding command order.AddLine: "aggregate_id" is missing
	// "expected_version" -5 is below -1
	// "data" must be a JSON object
}
