// Command chronicle is Chronicle's one binary over the example domains
// order and ballot: the embedded dev stack, the production service, and
// tools to send commands and read events. A service with its own aggregate
// types builds the same binary for them with package cli:
//
//	chronicle dev                      everything embedded, nothing to install
//	chronicle run --brokers k1:9092 --aggregates orders=order
//	chronicle send orders o-42 CreateOrder '{"user_id":"u-1"}' --wait
//	chronicle --help                   every subcommand
package main

import (
	"github.com/chronicle-es/chronicle/aggregates/ballot"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/cli"
)

func main() {
	cli.Main(order.Definition(), ballot.Definition())
}
