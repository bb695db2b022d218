package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/topics"
)

// target is what latency is measured on: the loop (Chronicle's processor or
// the bare loop) that reads commands and writes a result keyed by each
// command's id to results; stopped returns an error once it stopped.
type target struct {
	commands, results string
	stopped           func() error
}

// latency sends commands to tgt at share of peak commands/s for dur and
// measures each one's time from send to result.
func (r *run) latency(ctx context.Context, tgt target, share, peak float64, dur time.Duration) (Latency, error) {
	cfg := r.cfg
	rate := share * peak
	n := max(1, int(rate*dur.Seconds()))
	lat := Latency{Share: share, Rate: rate, Commands: n}
	phase := fmt.Sprintf("%s %g%%", PhaseLatency, share*100)

	// The commands, encoded beforehand: AddLines continuing the backlog.
	def := order.Definition()
	recs := make([]*kgo.Record, n)
	index := make(map[string]int, n)
	for i := range recs {
		rec, id, err := command(def, cfg.Commands+i, cfg.Orders)
		if err != nil {
			return lat, err
		}
		if cfg.Commands+i < cfg.Orders {
			// Still a CreateOrder (a backlog smaller than the orders is
			// refused by Validate, so this is only a guard).
			return lat, fmt.Errorf("latency command %d is not an AddLine", i)
		}
		rec.Topic = tgt.commands
		recs[i], index[id] = rec, i
	}
	sent := make([]time.Time, n)
	got := make([]time.Time, n)

	// The results are read from where each partition ends now.
	ends, err := r.admin.ListEndOffsets(ctx, tgt.results)
	if err != nil {
		return lat, fmt.Errorf("listing the end offsets of %s: %w", tgt.results, err)
	}
	start := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { start[o.Partition] = kgo.NewOffset().At(o.Offset) })
	consumer, err := kgo.NewClient(append(r.opts[:len(r.opts):len(r.opts)],
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{tgt.results: start}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(10*time.Millisecond))...)
	if err != nil {
		return lat, fmt.Errorf("creating the results consumer: %w", err)
	}
	defer consumer.Close()
	var received atomic.Int64
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for int(received.Load()) < n {
			fs := consumer.PollFetches(readCtx)
			if readCtx.Err() != nil {
				return
			}
			now := time.Now()
			fs.EachRecord(func(rec *kgo.Record) {
				if i, ok := index[string(rec.Key)]; ok && got[i].IsZero() {
					got[i] = now
					received.Add(1)
				}
			})
		}
	}()

	producer, err := kgo.NewClient(append(r.opts[:len(r.opts):len(r.opts)], kgo.RecordPartitioner(topics.Partitioner()), kgo.ProducerLinger(time.Millisecond))...)
	if err != nil {
		return lat, fmt.Errorf("creating the producer: %w", err)
	}
	defer producer.Close()
	var produceErr atomic.Pointer[error]
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			produceErr.CompareAndSwap(nil, &err)
		}
	}
	stopProgress := ticker(func() { cfg.Progress(Progress{Phase: phase, Done: received.Load(), Total: int64(n)}) })
	defer stopProgress()
	began := time.Now()
	for i := 0; i < n; {
		due := min(n, int(time.Since(began).Seconds()*rate)+1)
		for ; i < due; i++ {
			sent[i] = time.Now()
			producer.Produce(ctx, recs[i], promise)
		}
		if i < n {
			time.Sleep(time.Millisecond)
		}
		if err := ctx.Err(); err != nil {
			return lat, err
		}
	}
	lat.Achieved = float64(n) / time.Since(began).Seconds()
	if err := producer.Flush(ctx); err != nil {
		return lat, fmt.Errorf("sending: %w", err)
	}
	if p := produceErr.Load(); p != nil {
		return lat, fmt.Errorf("sending: %w", *p)
	}
	// Every result comes within a few commit intervals; wait far longer
	// before calling one missing.
	select {
	case <-readDone:
	case <-time.After(max(10*time.Second, 100*cfg.CommitInterval)):
		stopReading()
		<-readDone
	case <-ctx.Done():
		return lat, ctx.Err()
	}
	if err := tgt.stopped(); err != nil {
		return lat, fmt.Errorf("while latency was measured: %w", err)
	}
	ds := make([]time.Duration, 0, n)
	for i := range got {
		if got[i].IsZero() {
			lat.Missing++
			continue
		}
		ds = append(ds, got[i].Sub(sent[i]))
	}
	if len(ds) == 0 {
		return lat, fmt.Errorf("no result of %d commands arrived", n)
	}
	slices.Sort(ds)
	lat.P50, lat.P99, lat.P999 = ms(quantile(ds, 0.5)), ms(quantile(ds, 0.99)), ms(quantile(ds, 0.999))
	lat.Max = ms(ds[len(ds)-1])
	return lat, nil
}

// quantile returns the q-quantile of sorted ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
