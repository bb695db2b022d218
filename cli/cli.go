// Command chronicle is Chronicle's one binary: the embedded dev stack, the
// production service, and tools to send commands and read events.
//
//	chronicle dev                      everything embedded, nothing to install
//	chronicle run --brokers k1:9092    the production service
//	chronicle topics orders            create or check an aggregate type's topics
//	chronicle send orders o-42 AddLine '{"product_id":512,"quantity":1,"unit_price":1999}'
//	chronicle tail orders --from-beginning
//	chronicle history orders o-42 --at-version 3
//
// Every flag can also be set with an environment variable: --brokers is
// CHRONICLE_BROKERS, --sasl-password is CHRONICLE_SASL_PASSWORD, and so on.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], streams{in: os.Stdin, out: os.Stdout, err: os.Stderr}))
}

// streams are the command's standard streams, replaceable in tests.
type streams struct {
	in       io.Reader
	out, err io.Writer
}

type subcommand struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, s streams) int
}

func subcommands() []subcommand {
	return []subcommand{
		{"dev", "run everything embedded: Kafka (kfake), the processor for orders and ballots", runDev},
		{"run", "run the production processor against a Kafka cluster", runRun},
		{"topics", "create or check the topics of an aggregate type", runTopics},
		{"send", "publish commands and optionally wait for their results", runSend},
		{"tail", "follow an events topic", runTail},
		{"history", "show an aggregate's events and its state at a version or time", runHistory},
		{"status", "per partition: the owning instance, lag, last checkpoint; why instances are not ready", runStatus},
	}
}

func run(ctx context.Context, args []string, s streams) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(s.out)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, sc := range subcommands() {
		if sc.name == args[0] {
			return sc.run(ctx, args[1:], s)
		}
	}
	fmt.Fprintf(s.err, "chronicle: unknown command %q\n\n", args[0])
	usage(s.err)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: chronicle <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, sc := range subcommands() {
		fmt.Fprintf(w, "  %-8s %s\n", sc.name, sc.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'chronicle <command> --help' for a command's flags. Every flag can also be set")
	fmt.Fprintln(w, "with an environment variable: --brokers is CHRONICLE_BROKERS, and so on.")
}
