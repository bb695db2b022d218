//go:build linux

package chaos

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/internal/redistest"
	"github.com/chronicle-es/chronicle/topics"
)

// Environment and flags of the chaos test.
const (
	// The short chaos run (30k records, ≤ 3 minutes) runs by default;
	// envShort=0 (or -short) skips it.
	envShort = "CHRONICLE_CHAOS"
	// envLong=1 runs the long one (120k records, the faults 4 times).
	envLong = "CHRONICLE_CHAOS_LONG"
	// envSeed fixes the workload's seed (default: the time).
	envSeed = "CHRONICLE_CHAOS_SEED"
	// envDir keeps the run's logs and report in this directory (default:
	// a temporary one, removed when the test passes).
	envDir = "CHRONICLE_CHAOS_DIR"
	// envFaults chooses the faults: "all" (the default), "none" (a calm
	// run: it must show no violation, which checks the checker against
	// reality), or a comma-separated list of kill, term, flush, maxmemory,
	// redis-down and broker, to tell which fault causes what.
	envFaults = "CHRONICLE_CHAOS_FAULTS"
)

var longRun = flag.Bool("chaos.long", false, "run the long chaos test (also "+envLong+"=1)")

const (
	prefix     = "orders"
	group      = "chronicle"
	partitions = 6
	processors = 3
)

// runConfig sizes a chaos run.
type runConfig struct {
	records      int           // command records to produce
	rate         float64       // per second
	activeOrders int           // orders driven at a time
	cycles       int           // times the fault schedule runs
	cycle        time.Duration // length of one schedule
	drainTimeout time.Duration // for the last results after production ends
	stallBound   time.Duration
}

var (
	shortRun = runConfig{records: 30000, rate: 430, activeOrders: 400, cycles: 1, cycle: 70 * time.Second,
		drainTimeout: 40 * time.Second, stallBound: 30 * time.Second}
	longRunConfig = runConfig{records: 120000, rate: 400, activeOrders: 1000, cycles: 4, cycle: 75 * time.Second,
		drainTimeout: 120 * time.Second, stallBound: 30 * time.Second}
)

// env is everything a chaos run started.
type env struct {
	t       *testing.T
	dir     string
	bin     string
	broker  *broker
	redis   *redistest.Server
	procs   []*processor
	brokers []string
	adm     *kadm.Client
	admCl   *kgo.Client
}

// TestChaos runs three `chronicle run` processes against a broker process
// and a redis-server while a workload of order commands flows and faults
// are injected, then checks everything the topics hold (see Check).
//
// Short run: go test -run TestChaos -v ./chaos/ (part of the README's test command)
// Long run:  CHRONICLE_CHAOS_LONG=1 go test -run TestChaos -v -timeout 30m ./chaos/
func TestChaos(t *testing.T) {
	long := *longRun || os.Getenv(envLong) == "1"
	if !long && (testing.Short() || os.Getenv(envShort) == "0") {
		t.Skipf("the chaos test is skipped with -short or %s=0; %s=1 / -chaos.long runs the long one", envShort, envLong)
	}
	cfg := shortRun
	if long {
		cfg = longRunConfig
	}
	began := time.Now()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(envSeed); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", envSeed, s, err)
		}
	}
	enabled := map[string]bool{}
	switch f := os.Getenv(envFaults); f {
	case "", "all":
		for _, k := range faultKinds {
			enabled[k] = true
		}
	case "none":
	default:
		for _, k := range strings.Split(f, ",") {
			if !slices.Contains(faultKinds, k) {
				t.Fatalf("%s=%q: %q is not one of all, none, %s", envFaults, f, k, strings.Join(faultKinds, ", "))
			}
			enabled[k] = true
		}
	}
	e := setUp(t)
	logf(t, "seed %d, %d records at %.0f/s, faults %v; logs in %s", seed, cfg.records, cfg.rate, enabled, e.dir)

	col, err := startCollector(e.brokers, topics.For(prefix).All())
	if err != nil {
		t.Fatal(err)
	}
	defer col.close()

	// The workload.
	prod, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.RecordPartitioner(topics.Partitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	w := NewWorkload(seed, cfg.activeOrders, partitions)
	var produceErrs atomic.Int64
	var firstProduceErr atomic.Pointer[error]
	produced := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(produced)
		for i := range cfg.records {
			due := start.Add(time.Duration(float64(i) / cfg.rate * float64(time.Second)))
			time.Sleep(time.Until(due)) // pacing
			s := w.Next()
			rec := &kgo.Record{Topic: topics.For(prefix).Commands, Key: s.Key, Value: s.Value, Partition: s.Partition,
				Headers: []kgo.RecordHeader{{Key: "chaos-kind", Value: []byte(s.Kind)}, {Key: "chaos-seq", Value: []byte(strconv.Itoa(i))}}}
			prod.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
				if err != nil {
					produceErrs.Add(1)
					firstProduceErr.CompareAndSwap(nil, &err)
				}
			})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := prod.Flush(ctx); err != nil {
			produceErrs.Add(1)
			firstProduceErr.CompareAndSwap(nil, &err)
		}
	}()

	// The faults, on this goroutine (redistest fails the test from here).
	var faults []Fault
	for c := range cfg.cycles {
		faults = append(faults, e.runSchedule(start.Add(time.Duration(c)*cfg.cycle), c, enabled)...)
	}
	<-produced
	logf(t, "produced %d records in %v (%d produce errors); waiting for the last results", cfg.records, time.Since(start).Round(time.Millisecond), produceErrs.Load())

	// Drain: every record answered, every forward made.
	pending := -1
	drained := poll(cfg.drainTimeout, time.Second, func() bool {
		pending = Pending(e.history(col))
		return pending == 0
	})
	if !drained {
		logf(t, "not drained after %v: %d results or forwards still missing", cfg.drainTimeout, pending)
	} else {
		logf(t, "drained")
	}
	for _, p := range e.procs {
		if err := p.stop(); err != nil {
			t.Errorf("stopping %s: %v", p.name, err)
		}
	}
	notes := e.readEverything(col)
	h := e.history(col)
	rep := Check(h, Options{Faults: faults, StallBound: cfg.stallBound})

	// What else the run saw.
	for _, p := range e.procs {
		for _, x := range p.unexpectedExits() {
			notes = append(notes, fmt.Sprintf("%s %s", p.name, x))
		}
	}
	if n := produceErrs.Load(); n > 0 {
		notes = append(notes, fmt.Sprintf("%d produce errors, the first: %v", n, *firstProduceErr.Load()))
	}
	if n := resentByProducer(h.Commands); n > 0 {
		notes = append(notes, fmt.Sprintf("%d workload records are in the commands topic more than once (producer retries across the broker restart)", n))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "chaos run: seed %d, %d records (%v), %d orders, %v in all\n", seed, cfg.records, w.Counts(), w.Orders(), time.Since(began).Round(time.Second))
	for _, f := range faults {
		fmt.Fprintf(&b, "fault %-26s at +%5.1fs for %5.1fs\n", f.Name, f.Start.Sub(start).Seconds(), f.End.Sub(f.Start).Seconds())
	}
	b.WriteString(rep.String())
	for _, n := range notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	report := b.String()
	if err := os.WriteFile(filepath.Join(e.dir, "report.txt"), []byte(report), 0o644); err != nil {
		t.Error(err)
	}
	t.Log("\n" + report)

	s := rep.Stats
	if s.Predicted[statusDuplicate] == 0 || s.Predicted[statusRejected] == 0 || s.Predicted[statusInvalid] == 0 || s.Forwarded == 0 || s.Bad == 0 {
		t.Errorf("the workload did not exercise every path: %+v", s)
	}
	if !drained {
		t.Errorf("the run did not drain within %v after production ended: %d results or forwards missing", cfg.drainTimeout, pending)
	}
	if rep.Total() > 0 {
		t.Errorf("%d violations; logs and report in %s", rep.Total(), e.dir)
	}
}

// setUp builds the binary and starts the broker, Redis, the topics and the
// processors, and waits until the group shares every partition.
func setUp(t *testing.T) *env {
	e := &env{t: t}
	if d := os.Getenv(envDir); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		e.dir = d
	} else {
		d, err := os.MkdirTemp("", "chronicle-chaos-")
		if err != nil {
			t.Fatal(err)
		}
		e.dir = d
		t.Cleanup(func() {
			if !t.Failed() {
				os.RemoveAll(d)
			}
		})
	}
	e.bin = filepath.Join(e.dir, "chronicle")
	readSources(t)
	if out, err := exec.Command("go", "build", "-o", e.bin, "github.com/chronicle-es/chronicle/cmd/chronicle").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	e.redis = redistest.Start(t)
	if e.redis.Miniredis() {
		t.Skip("the chaos test needs a real redis-server (maxmemory, restarts); install redis-server")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e.broker = &broker{bin: e.bin, addr: addr, dataDir: filepath.Join(e.dir, "kafka"), logPath: filepath.Join(e.dir, "broker.log")}
	if err := e.broker.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.broker.stop(); err != nil {
			t.Errorf("stopping the broker: %v", err)
		}
	})
	e.brokers = []string{addr}
	e.admCl, err = kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.admCl.Close)
	e.adm = kadm.NewClient(e.admCl)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := topics.Ensure(ctx, e.admCl, topics.For(prefix), topics.Spec{Partitions: partitions, ReplicationFactor: -1}); err != nil {
		t.Fatalf("creating the topics: %v", err)
	}
	for i := range processors {
		name := fmt.Sprintf("processor-%d", i+1)
		args := []string{"run", "--brokers", addr, "--redis", e.redis.URL(), "--transactional-id", "chaos-" + name, "--admin-addr", "127.0.0.1:0",
			"--group", group, "--aggregates", prefix + "=order", "--partitions", strconv.Itoa(partitions),
			"--cache-size", "50", "--checkpoint-events", "200", "--checkpoint-interval", "5s",
			"--session-timeout", "6s", "--transaction-timeout", "10s", "--log-level", "info"}
		p := newProcessor(name, e.bin, filepath.Join(e.dir, name+".log"), args)
		e.procs = append(e.procs, p)
		t.Cleanup(func() { _ = p.stop() })
	}
	if !poll(60*time.Second, 200*time.Millisecond, func() bool {
		return groupReady(ctx, e.adm, group, topics.For(prefix).Commands, processors, partitions)
	}) {
		t.Fatalf("the %d processors did not share the %d partitions within 60s; see %s", processors, partitions, e.dir)
	}
	return e
}

// faultKinds are the kinds of fault a run can inject.
var faultKinds = []string{"kill", "term", "flush", "maxmemory", "redis-down", "broker"}

// runSchedule injects one cycle of the enabled faults, each at its offset
// from base, and returns them with when they began and ended.
func (e *env) runSchedule(base time.Time, cycle int, enabled map[string]bool) []Fault {
	t := e.t
	p := e.procs
	type step struct {
		at   time.Duration
		kind string
		name string
		do   func() time.Time
	}
	kill := func(i int, sig syscall.Signal) func() time.Time {
		return func() time.Time {
			end, err := p[i].signal(sig)
			if err != nil {
				t.Errorf("fault: %v", err)
				return time.Now()
			}
			return end
		}
	}
	steps := []step{
		{5 * time.Second, "kill", "SIGKILL processor-1", kill(0, syscall.SIGKILL)},
		{11 * time.Second, "flush", "FLUSHALL", e.flushAll},
		{16 * time.Second, "term", "SIGTERM processor-2", kill(1, syscall.SIGTERM)},
		{22 * time.Second, "maxmemory", "redis maxmemory 8s", e.maxMemory(8 * time.Second)},
		{33 * time.Second, "redis-down", "redis down 10s", e.redisDown(10 * time.Second)},
		{48 * time.Second, "broker", "broker SIGTERM+restart", e.restartBroker},
		{54 * time.Second, "kill", "SIGKILL processor-3", kill(2, syscall.SIGKILL)},
		{56 * time.Second, "flush", "FLUSHALL", e.flushAll},
		{61 * time.Second, "term", "SIGTERM processor-1", kill(0, syscall.SIGTERM)},
		{62 * time.Second, "kill", "SIGKILL processor-2", kill(1, syscall.SIGKILL)},
	}
	var out []Fault
	for _, s := range steps {
		if !enabled[s.kind] {
			continue
		}
		time.Sleep(time.Until(base.Add(s.at))) // the schedule, not a synchronisation
		name := s.name
		if cycle > 0 {
			name = fmt.Sprintf("%s (cycle %d)", s.name, cycle+1)
		}
		began := time.Now()
		logf(t, "fault: %s", name)
		end := s.do()
		out = append(out, Fault{Name: name, Start: began, End: end})
	}
	return out
}

func (e *env) redisClient() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: e.redis.Addr, MaxRetries: 3, DialTimeout: time.Second})
}

func (e *env) flushAll() time.Time {
	e.redis.FlushAll()
	return time.Now()
}

// maxMemory makes Redis refuse writes (maxmemory 1 byte under noeviction:
// OOM) for d, then lifts the limit.
func (e *env) maxMemory(d time.Duration) func() time.Time {
	return func() time.Time {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := e.redisClient()
		defer c.Close()
		if err := c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
			e.t.Errorf("fault: CONFIG SET maxmemory-policy: %v", err)
		}
		if err := c.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
			e.t.Errorf("fault: CONFIG SET maxmemory 1: %v", err)
		}
		if err := c.Set(ctx, "chaos-probe", "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "OOM") {
			e.t.Errorf("fault: with maxmemory 1 a SET gives %v, want an OOM error", err)
		}
		time.Sleep(d) // the fault's duration
		if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
			e.t.Errorf("fault: CONFIG SET maxmemory 0: %v", err)
		}
		return time.Now()
	}
}

// redisDown stops redis-server for d and starts it again, empty.
func (e *env) redisDown(d time.Duration) func() time.Time {
	return func() time.Time {
		e.redis.Stop()
		time.Sleep(d) // the fault's duration
		e.redis.Restart()
		return time.Now()
	}
}

func (e *env) restartBroker() time.Time {
	if err := e.broker.stop(); err != nil {
		e.t.Errorf("fault: %v", err)
	}
	if err := e.broker.start(); err != nil {
		e.t.Fatalf("fault: restarting the broker: %v", err)
	}
	return time.Now()
}

// history is what the collector has read so far.
func (e *env) history(col *collector) History {
	n := topics.For(prefix)
	return History{CommandsTopic: n.Commands, Partitions: partitions,
		Commands: col.records(n.Commands), Events: col.records(n.Events), State: col.records(n.State),
		Results: col.records(n.Results), DLQ: col.records(n.DLQ)}
}

// readEverything waits, once the processors are stopped, until no
// transaction is open and the collector has read every topic to its end.
// It returns what it noticed on the way.
func (e *env) readEverything(col *collector) []string {
	var notes []string
	all := topics.For(prefix).All()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var ends kadm.ListedOffsets
	var open []string
	var lastErr error
	if !poll(30*time.Second, 200*time.Millisecond, func() bool {
		ends, open, lastErr = openTransactions(ctx, e.adm, all)
		return lastErr == nil && len(open) == 0
	}) {
		if lastErr != nil {
			e.t.Fatalf("reading the topics' end offsets: %v", lastErr)
		}
		notes = append(notes, fmt.Sprintf("transactions still open 30s after the processors stopped: %v", open))
	}
	var behind []string
	if !poll(30*time.Second, 200*time.Millisecond, func() bool {
		behind = col.behind(ends)
		return len(behind) == 0
	}) {
		e.t.Errorf("the reader did not reach the end of every partition within 30s: %v", behind)
	}
	return notes
}

// resentByProducer counts workload records that are in the commands topic
// more than once (not forwarded copies: the producer wrote them twice).
func resentByProducer(cmds []Record) int {
	seen := map[string]int{}
	n := 0
	for _, r := range cmds {
		if _, fwd := r.Headers[HeaderForwardedFrom]; fwd {
			continue
		}
		if s, ok := r.Headers["chaos-seq"]; ok {
			if seen[s]++; seen[s] == 2 {
				n++
			}
		}
	}
	return n
}

// readSources opens every Go source and module file of the repository, so
// that go test's cache, which tracks the files a test opens but not what
// the `go build` it runs reads, reruns this test when any of them changes.
func readSources(t *testing.T) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			return nil
		}
		b, err := os.ReadFile(path)
		_ = b
		return err
	})
	if err != nil {
		t.Fatalf("reading the sources: %v", err)
	}
}
