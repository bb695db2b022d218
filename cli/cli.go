// Package cli is Chronicle's command line as a library: every subcommand of
// the chronicle binary (dev, run, topics, send, tail, history, status, …)
// for the aggregate types a program passes in, with all their flags,
// environment variables, Kafka TLS and SASL, Redis and logging. A service's
// own main is one call:
//
//	func main() {
//		cli.Main(account.Definition(), order.Definition())
//	}
//
// and its binary then runs, for its own aggregate types:
//
//	accounts dev                      everything embedded, nothing to install
//	accounts run --brokers k1:9092 --aggregates accounts=account
//	accounts topics accounts          create or check an aggregate type's topics
//	accounts send accounts a-1 Open '{"owner":"ada"}' --wait
//	accounts tail accounts --from-beginning
//	accounts history accounts a-1 --at-version 3
//
// Every flag can also be set with an environment variable: --brokers is
// CHRONICLE_BROKERS, --sasl-password is CHRONICLE_SASL_PASSWORD, and so on.
// The topic prefix of an aggregate type is its name and an "s" ("account"
// is served on accounts.commands) unless --aggregates says otherwise.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/chronicle-es/chronicle/aggregates"
)

// Main runs the command line given to the process (os.Args) for kinds, the
// aggregate types the program serves, with the process's standard streams,
// and exits with its status: 0 on success, 1 when a command failed, 2 for a
// usage error. SIGINT and SIGTERM stop a running subcommand gracefully.
func Main(kinds ...aggregates.Kind) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	exe, _ := os.Executable() // unknown: bench runs its broker inside the process
	code := (&App{Kinds: kinds, Executable: exe}).Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// App is a command line serving a set of aggregate types. The zero value
// of every field but Kinds is a sensible default; Main is App{Kinds:
// kinds, Executable: os.Executable()}.Run(ctx, os.Args[1:]).
//
// run and dev log with log/slog to Stderr, and route the Redis client's own
// log lines (go-redis: a failed dial, say) there too. go-redis keeps one
// logger per process (redis.SetLogger), which each run or dev sets as it
// starts: a program that runs several at once gets go-redis's lines in the
// last one's log.
type App struct {
	// Kinds are the aggregate types the program serves (dev, run) and
	// checks commands against (send, history, status). Two kinds with one
	// name are a usage error.
	Kinds []aggregates.Kind
	// Name is the program's name in usage and messages. Default: the base
	// name of os.Args[0].
	Name string
	// Version is what --version prints. Default: the module versions and
	// VCS revision recorded in the binary (runtime/debug.ReadBuildInfo).
	Version string
	// Stdin, Stdout and Stderr default to the process's.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Executable is the path of this program, for commands that start it
	// again: bench runs its broker as `<Executable> dev --broker-only`.
	// Main sets it; empty, bench runs its broker inside the process.
	Executable string
}

// Run runs one command line, args without the program name (e.g. ["send",
// "orders", "o-1", "CreateOrder", "{}"]), and returns its exit status: 0 on
// success, 1 when the command failed, 2 for a usage error. A long-running
// subcommand (dev, run, tail --follow) stops when ctx ends.
func (a *App) Run(ctx context.Context, args []string) int {
	s := &session{in: a.Stdin, out: a.Stdout, err: a.Stderr, name: a.Name, version: a.Version, exe: a.Executable}
	if s.in == nil {
		s.in = os.Stdin
	}
	if s.out == nil {
		s.out = os.Stdout
	}
	if s.err == nil {
		s.err = os.Stderr
	}
	if s.name == "" {
		s.name = filepath.Base(os.Args[0])
	}
	cat, err := newCatalog(a.Kinds)
	if err != nil {
		fmt.Fprintf(s.err, "%s: %v\n", s.name, err)
		return 2
	}
	s.kinds = cat
	return s.dispatch(ctx, args)
}

// session is one run of the command line: its standard streams, the
// program's name and version, and its aggregate types.
type session struct {
	in       io.Reader
	out, err io.Writer
	name     string
	version  string
	exe      string // App.Executable
	kinds    catalog
}

// subcommand is one entry of the command table.
type subcommand struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, s *session) int
}

// subcommands is the command table: adding a subcommand is adding a line.
func subcommands() []subcommand {
	return []subcommand{
		{"dev", "run everything embedded: Kafka (kfake), Redis (miniredis), the processor for every aggregate type", runDev},
		{"run", "run the production processor against a Kafka cluster", runRun},
		{"topics", "create or check the topics of an aggregate type", runTopics},
		{"send", "publish commands and optionally wait for their results", runSend},
		{"tail", "follow an events topic", runTail},
		{"history", "show an aggregate's events and its state at a version or time", runHistory},
		{"status", "per partition: the owning instance, lag, last checkpoint; why instances are not ready", runStatus},
		{"snapshots", "verify: compare stored snapshots with a full replay from Kafka and report drift", runSnapshots},
		{"bench", "measure throughput, latency and restores against a bare transactional loop on the same broker", runBench},
		{"version", "print the version of this program and of Chronicle", runVersion},
	}
}

func (s *session) dispatch(ctx context.Context, args []string) int {
	if len(args) == 0 {
		s.usage(s.err)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		s.usage(s.out)
		return 0
	case "-version", "--version":
		return runVersion(ctx, args[1:], s)
	}
	for _, sc := range subcommands() {
		if sc.name == args[0] {
			return sc.run(ctx, args[1:], s)
		}
	}
	fmt.Fprintf(s.err, "%s: unknown command %q\n\n", s.name, args[0])
	s.usage(s.err)
	return 2
}

func (s *session) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s <command> [flags]\n\n", s.name)
	fmt.Fprintln(w, "Commands:")
	width := 0
	for _, sc := range subcommands() {
		width = max(width, len(sc.name))
	}
	for _, sc := range subcommands() {
		fmt.Fprintf(w, "  %-*s  %s\n", width, sc.name, sc.summary)
	}
	fmt.Fprintln(w)
	if names := s.kinds.names(); len(names) > 0 {
		fmt.Fprintf(w, "Aggregate types: %s (by default on topic prefixes %s).\n", joinNames(names), s.kinds.defaultSpec())
	} else {
		fmt.Fprintln(w, "This program serves no aggregate types: pass them to cli.Main in its main.")
	}
	fmt.Fprintf(w, "Run '%s <command> --help' for a command's flags. Every flag can also be set\n", s.name)
	fmt.Fprintln(w, "with an environment variable: --brokers is CHRONICLE_BROKERS, and so on.")
}
