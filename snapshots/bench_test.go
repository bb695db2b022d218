package snapshots

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/internal/redistest"
)

const (
	benchBatch = 1000 // snapshots per Save and per LoadMany
	benchSize  = 300  // bytes of aggregate data per snapshot
)

// benchSnapshots returns benchBatch snapshots of benchSize bytes of
// JSON-like data at the given version.
func benchSnapshots(version int64) ([]Snapshot, []string) {
	snaps := make([]Snapshot, benchBatch)
	ids := make([]string, benchBatch)
	for i := range snaps {
		ids[i] = fmt.Sprintf("order-%06d", i)
		data := []byte(fmt.Sprintf(`{"id":%q,"status":"paid","user":"user-%d","lines":[`, ids[i], i))
		for len(data) < benchSize-2 {
			data = append(data, `{"sku":"A1","qty":2},`...)
		}
		data = append(data[:benchSize-2], ']', '}')
		snaps[i] = Snapshot{AggregateID: ids[i], Version: version, Offset: version*benchBatch + int64(i), Stamp: "order/v1", Data: data}
	}
	return snaps, ids
}

// BenchmarkRedis measures one Save of 1000 snapshots of 300 bytes with a
// checkpoint, and one LoadMany of the same 1000, on a real redis-server.
// Besides ns/op it reports ns/snapshot.
func BenchmarkRedis(b *testing.B) {
	srv := redistest.Start(b)
	if srv.Miniredis() {
		b.Log("measuring miniredis, not redis-server: the figures say nothing about production")
	}
	r, err := Open(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	b.Run(fmt.Sprintf("Save/%dx%dB", benchBatch, benchSize), func(b *testing.B) {
		snaps, _ := benchSnapshots(0)
		if !srv.Miniredis() {
			if err := r.client.ConfigResetStat(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(benchBatch * benchSize)
		b.ReportAllocs()
		var version int64
		for b.Loop() {
			version++ // every snapshot is newer, so every one is written
			for i := range snaps {
				snaps[i].Version = version
			}
			if err := r.Save(ctx, "bench", 0, &Checkpoint{Offset: version * benchBatch, Stamp: "order/v1"}, snaps); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/snapshot")
		if !srv.Miniredis() {
			// How long the script held Redis, as Redis measured it: the
			// time every other client waits behind one Save.
			b.ReportMetric(scriptMicros(ctx, b, r)*1000, "redis-ns/op")
		}
	})

	b.Run(fmt.Sprintf("LoadMany/%dx%dB", benchBatch, benchSize), func(b *testing.B) {
		snaps, ids := benchSnapshots(1 << 40)
		if err := r.Save(ctx, "bench", 1, nil, snaps); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(benchBatch * benchSize)
		b.ReportAllocs()
		for b.Loop() {
			m, err := r.LoadMany(ctx, "bench", 1, ids)
			if err != nil {
				b.Fatal(err)
			}
			if len(m) != benchBatch {
				b.Fatalf("LoadMany found %d of %d", len(m), benchBatch)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/snapshot")
	})
}

// scriptMicros returns Redis's own mean time per EVALSHA/EVAL call since the
// last CONFIG RESETSTAT, in microseconds.
func scriptMicros(ctx context.Context, b *testing.B, r *Redis) float64 {
	info, err := r.client.Info(ctx, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var calls, usec float64
	for _, line := range strings.Split(info, "\n") {
		if !strings.HasPrefix(line, "cmdstat_evalsha:") && !strings.HasPrefix(line, "cmdstat_eval:") {
			continue
		}
		for _, field := range strings.Split(strings.TrimSpace(line[strings.IndexByte(line, ':')+1:]), ",") {
			k, v, _ := strings.Cut(field, "=")
			n, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "calls":
				calls += n
			case "usec":
				usec += n
			}
		}
	}
	if calls == 0 {
		b.Fatal("Redis counted no script calls")
	}
	return usec / calls
}
