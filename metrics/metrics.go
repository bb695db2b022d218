// Package metrics exposes what a Chronicle processor does as Prometheus
// metrics: Metrics is the processor's Observer (counters and histograms,
// updated as things happen) and a prometheus.Collector of the gauges read
// from the processor at scrape time (partitions, checkpoints, cache, lag).
//
// Names follow Prometheus conventions: chronicle_<what>_total for counters,
// _seconds for durations. deploy/prometheus/alerts.yml and
// deploy/grafana/chronicle.json use them.
package metrics

import (
	"context"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronicle-es/chronicle/processor"
)

// Metrics implements processor.Observer and collects the processor's
// gauges. Create it with New, pass it as processor.Config.Observer, then
// Watch the processor.
type Metrics struct {
	commands        *prometheus.CounterVec
	handling        *prometheus.HistogramVec
	resultLatency   *prometheus.HistogramVec
	txns            *prometheus.CounterVec
	txnDuration     prometheus.Histogram
	txnCommands     prometheus.Histogram
	restores        *prometheus.CounterVec
	restoreDuration *prometheus.HistogramVec
	replayed        *prometheus.CounterVec
	cacheHits       *prometheus.CounterVec
	cacheMisses     *prometheus.CounterVec
	evictions       *prometheus.CounterVec
	storeErrors     *prometheus.CounterVec
	storeRetries    *prometheus.CounterVec
	leaseLost       *prometheus.CounterVec
	dlq             *prometheus.CounterVec
	foreign         *prometheus.CounterVec

	proc atomic.Pointer[processor.Processor]

	checkpointAge, sinceCheckpoint, cached, lag, assigned, paused, ready, fannedOut *prometheus.Desc
}

var _ processor.Observer = (*Metrics)(nil)

// New registers the metrics with reg and returns them.
func New(reg prometheus.Registerer) (*Metrics, error) {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &Metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_commands_total",
			Help: "Command records handled, by aggregate type, command type (other: not a command of the aggregate) and outcome (accepted, rejected, duplicate, invalid, forwarded)."},
			[]string{"aggregate_type", "command_type", "outcome"}),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "chronicle_command_handling_seconds",
			Help: "Time spent deciding one command.", Buckets: []float64{.00001, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05, .1}},
			[]string{"aggregate_type"}),
		resultLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "chronicle_command_result_latency_seconds",
			Help: "Time from a command record's timestamp to its result being produced (committed with the next transaction).", Buckets: latency},
			[]string{"aggregate_type"}),
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_transactions_total",
			Help: "Kafka transactions ended, by outcome (committed, aborted)."}, []string{"outcome"}),
		txnDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "chronicle_transaction_duration_seconds",
			Help: "Time from a transaction's first record to its end.", Buckets: latency}),
		txnCommands: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "chronicle_transaction_commands",
			Help: "Command records per transaction.", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_restores_total",
			Help: "Partition restores completed, by mode (full: replay of the whole events partition; checkpoint: from a checkpoint)."},
			[]string{"aggregate_type", "mode"}),
		restoreDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "chronicle_restore_duration_seconds",
			Help: "Time a partition restore took.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)},
			[]string{"aggregate_type", "mode"}),
		replayed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_restore_events_replayed_total",
			Help: "Events read by restores: applied by a full replay; after a checkpoint, applied when their aggregate is first used."}, []string{"aggregate_type"}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_cache_hits_total",
			Help: "Aggregates found in memory."}, []string{"aggregate_type"}),
		cacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_cache_misses_total",
			Help: "Aggregates not in memory: loaded from the snapshot store or new."}, []string{"aggregate_type"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_cache_evictions_total",
			Help: "Aggregates evicted from memory once their snapshot was stored."}, []string{"aggregate_type"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_snapshot_store_errors_total",
			Help: "Failed snapshot-store operations (claim, load, save, drop): claims, loads and drops after their retries, saves at every failed attempt (the writer retries them)."},
			[]string{"operation"}),
		storeRetries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_snapshot_store_retries_total",
			Help: "Snapshot-store operations (claim, load, save, drop) tried again after a failure."}, []string{"operation"}),
		leaseLost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_snapshot_store_lease_lost_total",
			Help: "Partitions whose snapshot-store lease was lost, by reason: revoked (the partition had been given away or reset here: ordinary), claimed (another instance claimed a partition this one held), flushed (Redis lost the lease), rolled_back (Redis went back to older data), other. Each is restored from Kafka."},
			[]string{"aggregate_type", "reason"}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_dlq_records_total",
			Help: "Records sent to the dead-letter topic, by code."}, []string{"aggregate_type", "code"}),
		foreign: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chronicle_foreign_writes_total",
			Help: "Commits that found events this instance did not write in its events partition."}, []string{"aggregate_type"}),

		checkpointAge: prometheus.NewDesc("chronicle_checkpoint_age_seconds",
			"Seconds since the partition's last stored checkpoint (absent before the first one and without a snapshot store).",
			[]string{"aggregate_type", "partition"}, nil),
		sinceCheckpoint: prometheus.NewDesc("chronicle_events_since_checkpoint",
			"Events committed since the partition's last checkpoint was taken.", []string{"aggregate_type", "partition"}, nil),
		cached: prometheus.NewDesc("chronicle_cache_aggregates",
			"Aggregates held in memory.", []string{"aggregate_type", "partition"}, nil),
		lag: prometheus.NewDesc("chronicle_consumer_lag",
			"Command records not yet consumed by the group: the partition's last stable offset minus the group's committed offset.",
			[]string{"aggregate_type", "partition"}, nil),
		assigned: prometheus.NewDesc("chronicle_partitions_assigned",
			"Partitions this instance holds.", []string{"aggregate_type"}, nil),
		paused: prometheus.NewDesc("chronicle_partitions_paused",
			"Partitions this instance holds whose fetching is paused, by reason (restoring, stopped).", []string{"aggregate_type", "reason"}, nil),
		ready: prometheus.NewDesc("chronicle_ready",
			"1 when the instance is ready (as /readyz), else 0.", nil, nil),
		fannedOut: prometheus.NewDesc("chronicle_fanout_batches_total",
			"Batches of one partition's commands that several workers decided (a backlog in fewer partitions than cores).", nil, nil),
	}
	version, revision, goVersion := buildInfo()
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "chronicle_build_info",
		Help:        "Always 1; the labels say which build runs: the module version, the VCS revision (-dirty: built from a modified tree) and the Go version.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion}})
	build.Set(1)
	for _, c := range []prometheus.Collector{build, m.commands, m.handling, m.resultLatency, m.txns, m.txnDuration, m.txnCommands,
		m.restores, m.restoreDuration, m.replayed, m.cacheHits, m.cacheMisses, m.evictions, m.storeErrors, m.storeRetries, m.leaseLost,
		m.dlq, m.foreign, m} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// buildInfo returns the main module's version and VCS revision as the Go
// toolchain stamped them into the binary ("unknown" when it did not: a
// build without module or VCS information), and the Go version.
func buildInfo() (version, revision, goVersion string) {
	version, revision, goVersion = "unknown", "unknown", runtime.Version()
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, revision, goVersion
	}
	if bi.Main.Version != "" {
		version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		goVersion = bi.GoVersion
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && revision != "unknown" {
		revision += "-dirty"
	}
	return version, revision, goVersion
}

// Watch makes the gauges read p.
func (m *Metrics) Watch(p *processor.Processor) { m.proc.Store(p) }

// CommandHandled implements processor.Observer.
func (m *Metrics) CommandHandled(aggType, commandType, outcome string, handling, sinceSent time.Duration) {
	m.commands.WithLabelValues(aggType, commandType, outcome).Inc()
	if outcome == "forwarded" {
		return
	}
	if handling > 0 {
		m.handling.WithLabelValues(aggType).Observe(handling.Seconds())
	}
	if sinceSent > 0 {
		m.resultLatency.WithLabelValues(aggType).Observe(sinceSent.Seconds())
	}
}

// TransactionEnded implements processor.Observer.
func (m *Metrics) TransactionEnded(committed bool, commands int, took time.Duration) {
	outcome := "aborted"
	if committed {
		outcome = "committed"
	}
	m.txns.WithLabelValues(outcome).Inc()
	m.txnDuration.Observe(took.Seconds())
	m.txnCommands.Observe(float64(commands))
}

// Restored implements processor.Observer.
func (m *Metrics) Restored(aggType, mode string, took time.Duration, events int64) {
	m.restores.WithLabelValues(aggType, mode).Inc()
	m.restoreDuration.WithLabelValues(aggType, mode).Observe(took.Seconds())
	m.replayed.WithLabelValues(aggType).Add(float64(events))
}

// DeadLettered implements processor.Observer.
func (m *Metrics) DeadLettered(aggType, code string) { m.dlq.WithLabelValues(aggType, code).Inc() }

// CacheLookup implements processor.Observer.
func (m *Metrics) CacheLookup(aggType string, hit bool) {
	if hit {
		m.cacheHits.WithLabelValues(aggType).Inc()
	} else {
		m.cacheMisses.WithLabelValues(aggType).Inc()
	}
}

// Evicted implements processor.Observer.
func (m *Metrics) Evicted(aggType string, n int) {
	m.evictions.WithLabelValues(aggType).Add(float64(n))
}

// SnapshotStoreError implements processor.Observer.
func (m *Metrics) SnapshotStoreError(operation string) {
	m.storeErrors.WithLabelValues(operation).Inc()
}

// SnapshotStoreRetry implements processor.Observer.
func (m *Metrics) SnapshotStoreRetry(operation string) {
	m.storeRetries.WithLabelValues(operation).Inc()
}

// LeaseLost implements processor.Observer.
func (m *Metrics) LeaseLost(aggType, reason string) {
	m.leaseLost.WithLabelValues(aggType, reason).Inc()
}

// ForeignWrite implements processor.Observer.
func (m *Metrics) ForeignWrite(aggType string) { m.foreign.WithLabelValues(aggType).Inc() }

// Describe implements prometheus.Collector for the gauges.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.checkpointAge, m.sinceCheckpoint, m.cached, m.lag, m.assigned, m.paused, m.ready, m.fannedOut} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the watched
// processor's status and, with a 2 s bound, the group's lag.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	p := m.proc.Load()
	if p == nil {
		return
	}
	ready, _ := p.Readiness()
	ch <- prometheus.MustNewConstMetric(m.ready, prometheus.GaugeValue, boolFloat(ready))
	ch <- prometheus.MustNewConstMetric(m.fannedOut, prometheus.CounterValue, float64(p.Stats().FannedOut))
	st := p.Status()
	assigned := map[string]int{}
	paused := map[[2]string]int{}
	for _, ps := range st.Partitions {
		part := strconv.Itoa(int(ps.Partition))
		assigned[ps.AggregateType]++
		if ps.State != processor.PartitionReady {
			paused[[2]string{ps.AggregateType, ps.State}]++
		}
		ch <- prometheus.MustNewConstMetric(m.cached, prometheus.GaugeValue, float64(ps.Cached), ps.AggregateType, part)
		ch <- prometheus.MustNewConstMetric(m.sinceCheckpoint, prometheus.GaugeValue, float64(ps.EventsSinceCheckpoint), ps.AggregateType, part)
		if !ps.LastCheckpoint.IsZero() {
			ch <- prometheus.MustNewConstMetric(m.checkpointAge, prometheus.GaugeValue, time.Since(ps.LastCheckpoint).Seconds(), ps.AggregateType, part)
		}
	}
	for t, n := range assigned {
		ch <- prometheus.MustNewConstMetric(m.assigned, prometheus.GaugeValue, float64(n), t)
	}
	for k, n := range paused {
		ch <- prometheus.MustNewConstMetric(m.paused, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	lag, err := p.Lag(ctx)
	if err != nil {
		return
	}
	held := map[string]map[int32]bool{}
	for _, ps := range st.Partitions {
		if held[ps.AggregateType] == nil {
			held[ps.AggregateType] = map[int32]bool{}
		}
		held[ps.AggregateType][ps.Partition] = true
	}
	for t, parts := range lag {
		for id, n := range parts {
			if held[t][id] { // each instance reports the partitions it holds
				ch <- prometheus.MustNewConstMetric(m.lag, prometheus.GaugeValue, float64(n), t, strconv.Itoa(int(id)))
			}
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
