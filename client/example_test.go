package client_test

import (
	"context"
	"fmt"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/client"
)

// startExample starts an in-process Kafka with the orders topics and a
// stand-in for the processor (in production: `chronicle run`). The returned
// function stops both.
func startExample() (client.Kafka, func(), error) {
	c, err := newCluster("orders")
	if err != nil {
		return client.Kafka{}, nil, err
	}
	f, err := startFakeProcessor(c, "orders", order.Definition(), fakeOptions{})
	if err != nil {
		c.Close()
		return client.Kafka{}, nil, err
	}
	return client.Kafka{Brokers: c.ListenAddrs()}, func() { f.stop(); c.Close() }, nil
}

func ExampleProducer_Send() {
	k, stop, err := startExample()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	p, err := client.NewProducer(client.ProducerConfig{Kafka: k})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	kind := order.Definition()
	create, err := kind.NewCommand("order-1", order.CreateOrder{UserID: "alice"}, aggregates.Metadata{Actor: "alice"})
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := p.Send(ctx, "orders", create)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Status, "at version", res.Version)

	// Sending the same command again is safe: nothing happens twice.
	res, err = p.Send(ctx, "orders", create)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Status)

	// A command the order refuses comes back rejected, with a code.
	ship, err := kind.NewCommand("order-1", order.ChangeStatus{Status: order.StatusShipped}, aggregates.Metadata{})
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err = p.Send(ctx, "orders", ship)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Status, res.Code)
	// Output:
	// accepted at version 0
	// duplicate
	// rejected invalid_transition
}

func ExampleProducer_SendAll() {
	k, stop, err := startExample()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	p, err := client.NewProducer(client.ProducerConfig{Kafka: k})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	kind := order.Definition()
	var cmds []aggregates.Command
	for _, payload := range []any{
		order.CreateOrder{UserID: "bob"},
		order.AddLine{ProductID: 7, Quantity: 2, UnitPrice: 450},
		order.AddLine{ProductID: 7, Quantity: 1, UnitPrice: 999},
	} {
		cmd, err := kind.NewCommand("order-2", payload, aggregates.Metadata{})
		if err != nil {
			fmt.Println(err)
			return
		}
		cmds = append(cmds, cmd)
	}
	results, err := p.SendAll(ctx, "orders", cmds)
	if err != nil {
		fmt.Println(err)
		return
	}
	for i, r := range results {
		fmt.Printf("%d: %s, version %d", i, r.Status, r.Version)
		if r.Code != "" {
			fmt.Printf(" (%s)", r.Code)
		}
		fmt.Println()
	}
	// Output:
	// 0: accepted, version 0
	// 1: accepted, version 1
	// 2: rejected, version 1 (invalid_price)
}

func ExampleSubscriber() {
	k, stop, err := startExample()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	if err := sendOrder(k, "order-3"); err != nil {
		fmt.Println(err)
		return
	}

	// Follow the orders' events from the beginning. With a Group set, the
	// members of the group would share the partitions and resume where
	// they stopped.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen := 0
	s, err := client.NewSubscriber(client.SubscriberConfig{
		Kafka:         k,
		Prefixes:      []string{"orders"},
		Decoder:       order.Definition(),
		FromBeginning: true,
		Handler: func(_ context.Context, e aggregates.Event) error {
			fmt.Printf("%s v%d %s %+v\n", e.Subject, e.Version, e.Type, e.Data)
			if seen++; seen == 4 {
				cancel() // enough: Run returns
			}
			return nil
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := s.Run(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// order-3 v0 order.OrderCreated {UserID:carol}
	// order-3 v1 order.LineAdded {ProductID:1 Quantity:2 UnitPrice:300}
	// order-3 v2 order.LineAdded {ProductID:2 Quantity:1 UnitPrice:1250}
	// order-3 v3 order.StatusChanged {From:new To:confirmed}
}

func ExampleReadHistory() {
	k, stop, err := startExample()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	if err := sendOrder(k, "order-3"); err != nil {
		fmt.Println(err)
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kind := order.Definition()
	history, err := client.ReadHistory(ctx, k, kind, "orders", "order-3")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(history), "events")

	// Time travel: the order as it was at version 1.
	past := kind.New("order-3")
	if err := aggregates.Rebuild(past, history, aggregates.UpToVersion(1)); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("v%d %s total %d\n", past.Version(), past.State().Status, past.State().Total)
	now := kind.New("order-3")
	if err := aggregates.Rebuild(now, history, nil); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("v%d %s total %d\n", now.Version(), now.State().Status, now.State().Total)
	// Output:
	// 4 events
	// v1 new total 600
	// v3 confirmed total 1850
}

// sendOrder sends the commands of a small confirmed order.
func sendOrder(k client.Kafka, id string) error {
	p, err := client.NewProducer(client.ProducerConfig{Kafka: k})
	if err != nil {
		return err
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kind := order.Definition()
	for _, payload := range []any{
		order.CreateOrder{UserID: "carol"},
		order.AddLine{ProductID: 1, Quantity: 2, UnitPrice: 300},
		order.AddLine{ProductID: 2, Quantity: 1, UnitPrice: 1250},
		order.ChangeStatus{Status: order.StatusConfirmed},
	} {
		cmd, err := kind.NewCommand(id, payload, aggregates.Metadata{})
		if err != nil {
			return err
		}
		res, err := p.Send(ctx, "orders", cmd)
		if err != nil {
			return err
		}
		if res.Status != aggregates.StatusAccepted {
			return fmt.Errorf("%s: %s %s", cmd.Type, res.Status, res.Reason)
		}
	}
	return nil
}
