//go:build linux

package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The processes of a chaos run: the chronicle binary as a Kafka broker
// (`dev --broker-only`) and as processors (`run`), each writing to its own
// log file, and a reader of every topic.

// proc is one running OS process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited
	err  error         // its exit, set before done is closed
}

// lineWatcher copies a process's output to its log and reports the first
// match of re in a line.
type lineWatcher struct {
	mu    sync.Mutex
	log   *os.File
	re    *regexp.Regexp
	buf   []byte
	found chan string // receives the first submatch, once
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.log.Write(p); err != nil {
		return 0, err
	}
	if w.re == nil {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := w.buf[:i]
		w.buf = w.buf[i+1:]
		if m := w.re.FindSubmatch(line); m != nil {
			w.found <- string(m[len(m)-1])
			w.re = nil // one match is all anyone waits for
			w.buf = nil
			break
		}
	}
	return len(p), nil
}

// spawn starts bin with args, appending its output to logPath. When ready
// is set, the first submatch of ready in its standard output is sent on
// the returned channel.
func spawn(bin string, args []string, logPath string, ready *regexp.Regexp) (*proc, <-chan string, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("opening log %s: %w", logPath, err)
	}
	fmt.Fprintf(logf, "=== %s start: chronicle %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	found := make(chan string, 1)
	cmd := exec.Command(bin, args...)
	cmd.Stdout = &lineWatcher{log: logf, re: ready, found: found}
	cmd.Stderr = &lineWatcher{log: logf}
	// The kernel kills the child if the test binary dies, so no process
	// outlives a crashed or timed-out test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("starting chronicle %s: %w", args[0], err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		fmt.Fprintf(logf, "=== %s exit: %v\n", time.Now().Format(time.RFC3339Nano), p.err)
		logf.Close()
		close(p.done)
	}()
	return p, found, nil
}

// stop sends sig and waits up to timeout for the exit, then kills.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling pid %d: %w", p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("pid %d did not exit within %v of %v and was killed", p.cmd.Process.Pid, timeout, sig)
}

// broker is the Kafka broker process, restartable on its address and data.
type broker struct {
	bin, addr, dataDir, logPath string
	cur                         *proc
}

var kafkaLine = regexp.MustCompile(`kafka:\s+(127\.0\.0\.1:\d+)`)

// start runs `chronicle dev --broker-only` and waits until it listens.
func (b *broker) start() error {
	p, found, err := spawn(b.bin, []string{"dev", "--broker-only", "--kafka-addr", b.addr, "--data-dir", b.dataDir}, b.logPath, kafkaLine)
	if err != nil {
		return err
	}
	select {
	case addr := <-found:
		if addr != b.addr {
			_ = p.stop(syscall.SIGKILL, 10*time.Second)
			return fmt.Errorf("the broker listens on %s, not %s", addr, b.addr)
		}
		b.cur = p
		return nil
	case <-p.done:
		return fmt.Errorf("the broker exited before listening (%v); see %s", p.err, b.logPath)
	case <-time.After(60 * time.Second):
		_ = p.stop(syscall.SIGKILL, 10*time.Second)
		return fmt.Errorf("the broker did not listen on %s within 60s; see %s", b.addr, b.logPath)
	}
}

// stop ends the broker with SIGTERM, which saves its data, and reports an
// unclean exit.
func (b *broker) stop() error {
	if b.cur == nil {
		return nil
	}
	p := b.cur
	b.cur = nil
	if err := p.stop(syscall.SIGTERM, 60*time.Second); err != nil {
		return err
	}
	if p.err != nil {
		return fmt.Errorf("the broker exited with %v on SIGTERM; see %s", p.err, b.logPath)
	}
	return nil
}

// processor is one `chronicle run` instance under a supervisor that
// restarts it whenever it exits, as an orchestrator would, until stopped.
type processor struct {
	name, bin, logPath string
	args               []string
	restartDelay       time.Duration

	mu         sync.Mutex
	cur        *proc
	started    chan struct{} // closed, and replaced, at every start
	stopping   bool
	expected   bool // the current process was signalled by the test
	unexpected []string
	loopDone   chan struct{}
}

func newProcessor(name, bin, logPath string, args []string) *processor {
	p := &processor{name: name, bin: bin, logPath: logPath, args: args, restartDelay: time.Second,
		started: make(chan struct{}), loopDone: make(chan struct{})}
	go p.loop()
	return p
}

func (p *processor) loop() {
	defer close(p.loopDone)
	for {
		p.mu.Lock()
		if p.stopping {
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		pr, _, err := spawn(p.bin, p.args, p.logPath, nil)
		if err != nil {
			p.mu.Lock()
			p.unexpected = append(p.unexpected, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
			p.mu.Unlock()
			time.Sleep(p.restartDelay)
			continue
		}
		p.mu.Lock()
		p.cur, p.expected = pr, false
		close(p.started)
		p.started = make(chan struct{})
		p.mu.Unlock()
		<-pr.done
		p.mu.Lock()
		if p.stopping {
			p.mu.Unlock()
			return
		}
		if !p.expected {
			p.unexpected = append(p.unexpected, fmt.Sprintf("%s: exited by itself (%v)", time.Now().Format("15:04:05.000"), pr.err))
		}
		p.mu.Unlock()
		// An orchestrator's restart delay, not a synchronisation.
		time.Sleep(p.restartDelay)
	}
}

// signal sends sig to the running instance and returns once the
// supervisor has started its replacement.
func (p *processor) signal(sig syscall.Signal) (time.Time, error) {
	p.mu.Lock()
	cur, started := p.cur, p.started
	p.expected = true
	p.mu.Unlock()
	if cur == nil {
		return time.Time{}, fmt.Errorf("%s is not running", p.name)
	}
	if err := cur.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return time.Time{}, fmt.Errorf("signalling %s: %w", p.name, err)
	}
	select {
	case <-started:
		return time.Now(), nil
	case <-time.After(60 * time.Second):
		return time.Time{}, fmt.Errorf("%s was not restarted within 60s of %v; see %s", p.name, sig, p.logPath)
	}
}

// stop ends the supervisor and the instance (SIGTERM, killed after 30s).
func (p *processor) stop() error {
	p.mu.Lock()
	p.stopping = true
	cur := p.cur
	p.mu.Unlock()
	var err error
	if cur != nil {
		err = cur.stop(syscall.SIGTERM, 30*time.Second)
		if err == nil && cur.err != nil {
			err = fmt.Errorf("%s exited with %v on SIGTERM; see %s", p.name, cur.err, p.logPath)
		}
	}
	<-p.loopDone
	return err
}

func (p *processor) unexpectedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// collector reads every topic from the start with read_committed, keeping
// control records only to know how far it has read.
type collector struct {
	cl     *kgo.Client
	topics []string
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	recs map[string][]Record
	next map[string]map[int32]int64 // the offset after the last record read, control records included
}

func startCollector(brokers []string, topics []string) (*collector, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{cl: cl, topics: topics, cancel: cancel, done: make(chan struct{}),
		recs: map[string][]Record{}, next: map[string]map[int32]int64{}}
	go func() {
		defer close(c.done)
		for ctx.Err() == nil {
			fetches := cl.PollFetches(ctx)
			c.mu.Lock()
			fetches.EachRecord(func(r *kgo.Record) {
				if c.next[r.Topic] == nil {
					c.next[r.Topic] = map[int32]int64{}
				}
				c.next[r.Topic][r.Partition] = r.Offset + 1
				if r.Attrs.IsControl() {
					return
				}
				h := make(map[string]string, len(r.Headers))
				for _, kv := range r.Headers {
					h[kv.Key] = string(kv.Value)
				}
				c.recs[r.Topic] = append(c.recs[r.Topic], Record{Partition: r.Partition, Offset: r.Offset,
					Key: r.Key, Value: r.Value, Headers: h, Timestamp: r.Timestamp})
			})
			c.mu.Unlock()
		}
	}()
	return c, nil
}

func (c *collector) close() {
	c.cancel()
	<-c.done
	c.cl.Close()
}

// records returns what the collector has read of topic so far.
func (c *collector) records(topic string) []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Record(nil), c.recs[topic]...)
}

// behind lists the partitions not yet read up to the given end offsets.
func (c *collector) behind(ends kadm.ListedOffsets) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 && c.next[o.Topic][o.Partition] < o.Offset {
			out = append(out, fmt.Sprintf("%s/%d at %d of %d", o.Topic, o.Partition, c.next[o.Topic][o.Partition], o.Offset))
		}
	})
	return out
}

// openTransactions lists the partitions whose last stable offset is below
// their high watermark: a transaction is still open there.
func openTransactions(ctx context.Context, adm *kadm.Client, topics []string) (kadm.ListedOffsets, []string, error) {
	hw, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, nil, fmt.Errorf("listing end offsets: %w", err)
	}
	lso, err := adm.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return nil, nil, fmt.Errorf("listing last stable offsets: %w", err)
	}
	if err := errors.Join(hw.Error(), lso.Error()); err != nil {
		return nil, nil, fmt.Errorf("listing offsets: %w", err)
	}
	var open []string
	hw.Each(func(o kadm.ListedOffset) {
		if s, ok := lso.Lookup(o.Topic, o.Partition); ok && s.Offset < o.Offset {
			open = append(open, o.Topic+"/"+strconv.Itoa(int(o.Partition))+": stable "+strconv.FormatInt(s.Offset, 10)+" < end "+strconv.FormatInt(o.Offset, 10))
		}
	})
	return lso, open, nil
}

// poll calls cond every interval until it returns true or timeout passes.
func poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// groupReady reports whether the group is stable with n members sharing
// every partition of topic.
func groupReady(ctx context.Context, adm *kadm.Client, group, topic string, n, partitions int) bool {
	gs, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return false
	}
	g, ok := gs[group]
	if !ok || g.Err != nil || g.State != "Stable" || len(g.Members) != n {
		return false
	}
	return len(g.AssignedPartitions()[topic]) == partitions
}

// logf is t.Logf with the time of day, for a readable timeline.
func logf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("%s "+format, append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}
