package cli

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/internal/proctest"
)

// TestDevBrokerOnlyKeepsItsDataAcrossASIGTERMRestart runs `chronicle dev
// --broker-only`, checks it serves Kafka without creating any topic, stops
// it with SIGTERM and starts it again on the same address and data
// directory: the records written before are still there.
func TestDevBrokerOnlyKeepsItsDataAcrossASIGTERMRestart(t *testing.T) {
	addr := proctest.FreeAddr(t)
	dataDir := t.TempDir()
	args := []string{"--broker-only", "--kafka-addr", addr, "--data-dir", dataDir}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	d := startDev(t, args...)
	if d.brokers != addr {
		t.Fatalf("dev --broker-only listens on %s, want %s", d.brokers, addr)
	}
	if !strings.Contains(d.Output(), "(broker only)") {
		t.Errorf("dev --broker-only does not say it runs the broker only:\n%s", d.Output())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	listed, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatalf("listing topics: %v", err)
	}
	if names := listed.Names(); len(names) != 0 {
		t.Errorf("dev --broker-only created topics %v; it must run no processor", names)
	}
	if _, err := adm.CreateTopic(ctx, 2, -1, nil, "kept"); err != nil {
		t.Fatalf("creating topic: %v", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "kept", Key: []byte("k"), Value: []byte("before the restart")}).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
	cl.Close()

	if err := d.Stop(syscall.SIGTERM); err != nil {
		t.Fatalf("dev --broker-only on SIGTERM: %v\n%s", err, d.Output())
	}
	if !strings.Contains(d.Output(), "chronicle dev stopped") {
		t.Errorf("dev --broker-only did not say it stopped:\n%s", d.Output())
	}

	d2 := startDev(t, args...)
	if d2.brokers != addr {
		t.Fatalf("restarted dev --broker-only listens on %s, want %s", d2.brokers, addr)
	}
	cl, err = kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("kept"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("the record written before the restart is gone: %v", ctx.Err())
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			t.Logf("fetch errors while the topic reappears: %v", errs)
			continue
		}
		if recs := fetches.Records(); len(recs) > 0 {
			if string(recs[0].Value) != "before the restart" || len(recs) != 1 {
				t.Fatalf("after the restart topic kept holds %d records, the first %q", len(recs), recs[0].Value)
			}
			return
		}
	}
}

// TestASecondDevOnTheSameDataDirectoryFailsAtOnce runs two `chronicle dev`
// on one data directory: the second exits 1 with a message naming the
// directory, the first one's pid and what to do, and never serves. Once the
// first has stopped, the directory is free again.
func TestASecondDevOnTheSameDataDirectoryFailsAtOnce(t *testing.T) {
	dataDir := t.TempDir()
	d := startDev(t, "--kafka-addr", "127.0.0.1:0", "--data-dir", dataDir)

	// On another port, so only the directory is shared.
	out, errOut, code := chronicle(t, "", "dev", "--kafka-addr", "127.0.0.1:0", "--data-dir", dataDir, "--admin-addr", "off")
	if code != 1 {
		t.Fatalf("the second dev exited %d, want 1\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	want := fmt.Sprintf("chronicle dev: data directory in use: %s is held by another chronicle dev (pid %d): stop that one, or give this one another directory with --data-dir", dataDir, d.Pid())
	if !strings.Contains(errOut, want) {
		t.Errorf("the second dev's error lacks %q:\n%s", want, errOut)
	}
	if strings.Contains(out, "is running") {
		t.Errorf("the second dev said it was running:\n%s", out)
	}

	d.stop(t)
	startDev(t, "--kafka-addr", "127.0.0.1:0", "--data-dir", dataDir)
}
