package processor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/snapshots"
)

// Status.Readiness turns each unmet condition into a reason; the states
// themselves are set by Run and checked end to end in package admin.
func TestReadinessNamesEveryUnmetCondition(t *testing.T) {
	up := Status{Started: true, TopicsValid: true, GroupJoined: true}
	part := func(state, reason string) PartitionStatus {
		return PartitionStatus{AggregateType: "order", Topic: "orders.commands", Partition: 2, State: state, Reason: reason}
	}
	for _, tc := range []struct {
		name string
		st   Status
		want []string // substrings, one per reason, in order
	}{
		{name: "before Run", st: Status{}, want: []string{"not running"}},
		{name: "checking the topics", st: Status{Started: true}, want: []string{"topics not validated"}},
		{name: "joining the group", st: Status{Started: true, TopicsValid: true}, want: []string{"consumer group not joined"}},
		{name: "joined with nothing assigned", st: up},
		{name: "every partition restored", st: Status{Started: true, TopicsValid: true, GroupJoined: true,
			Partitions: []PartitionStatus{part(PartitionReady, "")}}},
		{name: "a partition restoring", st: Status{Started: true, TopicsValid: true, GroupJoined: true,
			Partitions: []PartitionStatus{part(PartitionRestoring, "waiting for an open transaction")}},
			want: []string{"orders.commands/2 is restoring: waiting for an open transaction"}},
		{name: "a partition stopped", st: Status{Started: true, TopicsValid: true, GroupJoined: true,
			Partitions: []PartitionStatus{part(PartitionStopped, "offset 7 cannot be decoded")}},
			want: []string{"orders.commands/2 is stopped: offset 7 cannot be decoded"}},
		{name: "a session restarting with a partition still listed", st: Status{Started: true, TopicsValid: true,
			Partitions: []PartitionStatus{part(PartitionRestoring, "")}},
			want: []string{"consumer group not joined", "orders.commands/2 is restoring"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ready, reasons := tc.st.Readiness()
			if ready != (len(tc.want) == 0) || len(reasons) != len(tc.want) {
				t.Fatalf("Readiness = %v %q, want reasons like %q", ready, reasons, tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(reasons[i], w) {
					t.Errorf("reason %d = %q, want it to contain %q", i, reasons[i], w)
				}
			}
		})
	}
}

func TestLeaseLostReasons(t *testing.T) {
	want := snapshots.Lease{Epoch: "A", Seq: 4}
	lost := func(found *snapshots.Lease) error {
		return fmt.Errorf("saving: %w", &snapshots.LeaseError{Partition: "order/1", Want: want, Found: found})
	}
	for _, tc := range []struct {
		name   string
		err    error
		closed bool
		want   string
	}{
		{"the partition was revoked before the loss was seen", lost(&snapshots.Lease{Epoch: "B"}), true, LeaseLostRevoked},
		{"another epoch while held", lost(&snapshots.Lease{Epoch: "B"}), false, LeaseLostClaimed},
		{"no lease at all", lost(nil), false, LeaseLostFlushed},
		{"our epoch with fewer writes", lost(&snapshots.Lease{Epoch: "A", Seq: 2}), false, LeaseLostRolledBack},
		{"a store that does not say", fmt.Errorf("x: %w", snapshots.ErrLeaseLost), false, LeaseLostOther},
	} {
		if got := leaseLostReason(tc.err, tc.closed); got != tc.want {
			t.Errorf("%s: reason %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Durations in logs show their unit in the JSON handler too, which prints
// a bare time.Duration as integer nanoseconds.
func TestLoggedDurationsCarryTheirUnit(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("restored", durationAttr("took", 1500*time.Millisecond))
	kgoLogger{log}.Log(kgo.LogLevelWarn, "request failed", "backoff", 250*time.Millisecond, "broker", 1)
	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 || lines[0]["took"] != "1.5s" || lines[1]["backoff"] != "250ms" || lines[1]["broker"] != float64(1) {
		t.Errorf("logged %s, want took \"1.5s\" and backoff \"250ms\"", buf.String())
	}
	kv := []any{"backoff", time.Second}
	if withDurationUnits(kv); !slices.Equal(kv, []any{"backoff", time.Second}) {
		t.Errorf("withDurationUnits changed its argument: %v", kv)
	}
}
