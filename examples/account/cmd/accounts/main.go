// Command accounts is the account service: every chronicle subcommand (dev,
// run, send, tail, history, topics, status, snapshots verify) for the
// account aggregate type, served on the topic prefix "accounts".
package main

import (
	"github.com/chronicle-es/chronicle/cli"
	"github.com/chronicle-es/chronicle/examples/account"
)

func main() {
	cli.Main(account.Definition())
}
