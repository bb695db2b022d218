package deploy

// metricKind is a Prometheus metric type.
type metricKind int

const (
	counter metricKind = iota
	gauge
	histogram
)

type metricSpec struct {
	kind   metricKind
	labels []string
	// values lists the allowed values of enumerated labels.
	values map[string][]string
}

// chronicleMetrics is the contract of the admin server's /metrics (issue 9),
// the only chronicle_* names the alerts and the dashboard may use. Keep it in
// step with deploy/README.md's metric table; metrics_exposed_test.go checks
// it against what the metrics package registers and a running dev exposes.
var chronicleMetrics = map[string]metricSpec{
	"chronicle_commands_total": {counter, []string{"aggregate_type", "command_type", "outcome"},
		map[string][]string{"outcome": {"accepted", "rejected", "duplicate", "invalid", "forwarded"}}},
	"chronicle_command_handling_seconds":       {histogram, []string{"aggregate_type"}, nil},
	"chronicle_command_result_latency_seconds": {histogram, []string{"aggregate_type"}, nil},
	"chronicle_transactions_total": {counter, []string{"outcome"},
		map[string][]string{"outcome": {"committed", "aborted"}}},
	"chronicle_transaction_duration_seconds": {histogram, nil, nil},
	"chronicle_transaction_commands":         {histogram, nil, nil},
	"chronicle_restores_total": {counter, []string{"aggregate_type", "mode"},
		map[string][]string{"mode": {"full", "checkpoint"}}},
	"chronicle_restore_duration_seconds": {histogram, []string{"aggregate_type", "mode"},
		map[string][]string{"mode": {"full", "checkpoint"}}},
	"chronicle_restore_events_replayed_total": {counter, []string{"aggregate_type"}, nil},
	"chronicle_checkpoint_age_seconds":        {gauge, []string{"aggregate_type", "partition"}, nil},
	"chronicle_events_since_checkpoint":       {gauge, []string{"aggregate_type", "partition"}, nil},
	"chronicle_cache_aggregates":              {gauge, []string{"aggregate_type", "partition"}, nil},
	"chronicle_cache_hits_total":              {counter, []string{"aggregate_type"}, nil},
	"chronicle_cache_misses_total":            {counter, []string{"aggregate_type"}, nil},
	"chronicle_cache_evictions_total":         {counter, []string{"aggregate_type"}, nil},
	"chronicle_snapshot_store_errors_total": {counter, []string{"operation"},
		map[string][]string{"operation": {"claim", "load", "save", "drop"}}},
	"chronicle_snapshot_store_retries_total": {counter, []string{"operation"},
		map[string][]string{"operation": {"claim", "load", "save", "drop"}}},
	"chronicle_snapshot_store_lease_lost_total": {counter, []string{"aggregate_type", "reason"},
		map[string][]string{"reason": {"revoked", "claimed", "flushed", "rolled_back", "other"}}},
	"chronicle_dlq_records_total":   {counter, []string{"aggregate_type", "code"}, nil},
	"chronicle_consumer_lag":        {gauge, []string{"aggregate_type", "partition"}, nil},
	"chronicle_partitions_assigned": {gauge, []string{"aggregate_type"}, nil},
	"chronicle_partitions_paused": {gauge, []string{"aggregate_type", "reason"},
		map[string][]string{"reason": {"restoring", "stopped"}}},
	"chronicle_foreign_writes_total": {counter, []string{"aggregate_type"}, nil},
	"chronicle_ready":                {gauge, nil, nil},
	"chronicle_fanout_batches_total": {counter, nil, nil},
	"chronicle_build_info":           {gauge, []string{"version", "revision", "goversion"}, nil},
}

// foreignMetrics are the other metrics the alerts may use, with their
// labels: Prometheus's own up, and kube-state-metrics' pod readiness.
var foreignMetrics = map[string]metricSpec{
	"up":                    {gauge, nil, nil},
	"kube_pod_status_ready": {gauge, []string{"namespace", "pod", "condition"}, map[string][]string{"condition": {"true", "false", "unknown"}}},
}

// targetLabels are the labels Prometheus adds to every scraped series (and
// the pod labels of a Kubernetes scrape).
var targetLabels = []string{"instance", "job", "namespace", "pod"}
