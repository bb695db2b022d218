package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/admin"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/internal/kafkatest"
	"github.com/chronicle-es/chronicle/processor"
	"github.com/chronicle-es/chronicle/topics"
)

// env is a kfake broker with the topics of the order aggregate, two
// partitions each, and a processor for them behind a real admin server.
type env struct {
	c     *kfake.Cluster
	names topics.Names
	p     *processor.Processor
	base  string // the admin server's URL
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := kafkatest.Start(t)
	e := &env{c: c, names: topics.For("orders")}
	cl := e.client(t)
	if _, err := topics.Ensure(context.Background(), cl, e.names, topics.Spec{Partitions: 2, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
	var err error
	e.p, err = processor.New(processor.Config{
		Brokers: c.ListenAddrs(), Group: "readyz", TransactionalID: "readyz-1",
		Aggregates: []processor.Binding{{Kind: order.Definition(), Prefix: "orders"}}, Partitions: 2,
		CommitInterval: 20 * time.Millisecond, SessionTimeout: 3 * time.Second, RebalanceTimeout: 3 * time.Second,
		TransactionTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, err := admin.Start(ctx, admin.Config{Addr: "127.0.0.1:0", Readiness: e.p.Readiness})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	e.base = "http://" + srv.Addr()
	return e
}

func (e *env) client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return kafkatest.Client(t, e.c, append([]kgo.Opt{kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
}

// run runs the processor until the test ends.
func (e *env) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// readyz is one answer of /readyz.
type readyz struct {
	code    int
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons"`
}

func (e *env) readyz(t *testing.T) readyz {
	t.Helper()
	resp, err := http.Get(e.base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := readyz{code: resp.StatusCode}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("/readyz Content-Type %q", ct)
	}
	return r
}

// await polls /readyz until ok accepts an answer, and returns it; it fails
// the test with the last answer after a minute.
func (e *env) await(t *testing.T, what string, ok func(readyz) bool) readyz {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := e.readyz(t)
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered %s; last: %d %q", what, r.code, r.Reasons)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// /readyz is not ready while a partition restores, says which and what it
// waits for, and is ready once it is restored. The restore of partition 0
// is held by an open transaction of another producer on its events
// partition: a restore waits until its stable offset reaches its end.
func TestReadyzIsNotReadyWhileAPartitionRestores(t *testing.T) {
	e := newEnv(t)
	if r := e.readyz(t); r.code != http.StatusServiceUnavailable || r.Ready || len(r.Reasons) != 1 || !strings.Contains(r.Reasons[0], "not running") {
		t.Fatalf("/readyz before Run: %d %v %q, want 503 saying it is not running", r.code, r.Ready, r.Reasons)
	}

	blocker := e.client(t, kgo.TransactionalID("readyz-blocker"), kgo.TransactionTimeout(time.Minute))
	ctx := context.Background()
	if err := blocker.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := blocker.ProduceSync(ctx, &kgo.Record{Topic: e.names.Events, Partition: 0, Value: []byte("never committed")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	e.run(t)
	restoring := e.names.Commands + "/0 is restoring"
	r := e.await(t, "only partition 0 restoring", func(r readyz) bool {
		return len(r.Reasons) == 1 && strings.Contains(r.Reasons[0], restoring)
	})
	if r.code != http.StatusServiceUnavailable || r.Ready {
		t.Errorf("/readyz with partition 0 restoring: %d ready=%v, want 503 and not ready", r.code, r.Ready)
	}
	if !strings.Contains(r.Reasons[0], "open transaction on "+e.names.Events+"/0") {
		t.Errorf("reason %q does not say the restore waits for the open transaction on %s/0", r.Reasons[0], e.names.Events)
	}
	if st := e.p.Status(); !st.Started || !st.TopicsValid || !st.GroupJoined || len(st.Partitions) != 2 ||
		st.Partitions[0].State != processor.PartitionRestoring || st.Partitions[1].State != processor.PartitionReady {
		t.Errorf("Status = %+v, want topics valid, group joined, partition 0 restoring and 1 ready", st)
	}

	if err := blocker.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	r = e.await(t, "ready after the transaction ended", func(r readyz) bool { return r.code == http.StatusOK })
	if !r.Ready || len(r.Reasons) != 0 {
		t.Errorf("/readyz once restored: ready=%v reasons %q, want ready without reasons", r.Ready, r.Reasons)
	}
}

// A stopped partition (an event the running code cannot decode) makes
// /readyz not ready, naming the partition, the offset and why.
func TestReadyzNamesAStoppedPartition(t *testing.T) {
	e := newEnv(t)
	prod := e.client(t)
	if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: e.names.Events, Partition: 1, Value: []byte("not an event")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	e.run(t)
	stopped := e.names.Commands + "/1 is stopped"
	r := e.await(t, "partition 1 stopped", func(r readyz) bool {
		return len(r.Reasons) == 1 && strings.Contains(r.Reasons[0], stopped)
	})
	if r.code != http.StatusServiceUnavailable || r.Ready {
		t.Errorf("/readyz with partition 1 stopped: %d ready=%v, want 503 and not ready", r.code, r.Ready)
	}
	if !strings.Contains(r.Reasons[0], "offset 0") || !strings.Contains(r.Reasons[0], "deploy a version that reads this event") {
		t.Errorf("reason %q does not name the offset and the fix", r.Reasons[0])
	}
}
