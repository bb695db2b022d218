package snapshots

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// openRedis opens url with a key prefix of the test's own, so tests sharing
// a server never see each other's keys.
func openRedis(t *testing.T, url string) *Redis {
	t.Helper()
	r, err := Open(url, WithKeyPrefix("test:"+t.Name()+":"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// corruptRedis writes raw straight to the key the store would use.
func corruptRedis(t *testing.T, s store, aggType string, partition int32, id string, raw []byte) {
	t.Helper()
	r := s.(*Redis)
	key := r.checkpointKey(aggType, partition)
	if id != "" {
		key = r.snapshotKey(aggType, partition, id)
	}
	if err := r.client.Set(testCtx(t), key, raw, 0).Err(); err != nil {
		t.Fatalf("writing garbage to %s: %v", key, err)
	}
}

func TestRedisConformance(t *testing.T) {
	srv := redistest.Start(t)
	runConformance(t, backend{
		open:    func(t *testing.T) store { return openRedis(t, srv.URL()) },
		corrupt: corruptRedis,
		outage: func(t *testing.T) (store, func(), func()) {
			own := redistest.Start(t)
			return openRedis(t, own.URL()), own.Stop, own.Restart
		},
	})
}

func TestRedisClusterConformance(t *testing.T) {
	cl := redistest.StartCluster(t)
	url := "redis://" + strings.Join(cl.Addrs(), ",")
	runConformance(t, backend{
		open:    func(t *testing.T) store { return openRedis(t, url) },
		corrupt: corruptRedis,
	})

	t.Run("one partition's keys share a slot and partitions spread over the masters", func(t *testing.T) {
		r := openRedis(t, url)
		ctx := testCtx(t)
		c := r.client.(*redis.ClusterClient)
		owners := map[string]bool{}
		for p := int32(0); p < 12; p++ {
			keys := []string{r.checkpointKey("order", p), r.snapshotKey("order", p, "a"), r.snapshotKey("order", p, "{other}tag")}
			var slot int64 = -1
			for _, k := range keys {
				s, err := c.ClusterKeySlot(ctx, k).Result()
				if err != nil {
					t.Fatal(err)
				}
				if slot != -1 && s != slot {
					t.Fatalf("partition %d: key %s is in slot %d, %s in %d", p, keys[0], slot, k, s)
				}
				slot = s
			}
			m, err := c.MasterForKey(ctx, keys[0])
			if err != nil {
				t.Fatal(err)
			}
			owners[m.Options().Addr] = true
		}
		if len(owners) < 2 {
			t.Fatalf("12 partitions landed on %d master(s); the hash tag should spread them", len(owners))
		}
	})
}

func TestRedisKeyLayoutAndEncoding(t *testing.T) {
	srv := redistest.Start(t)
	r, err := Open(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := testCtx(t)
	sn := Snapshot{AggregateID: "o-1", Version: 7, Offset: 99, Stamp: "order/v1", Data: []byte(`{"status":"paid"}`)}
	if err := r.Save(ctx, "order", 3, &Checkpoint{Offset: 100, Stamp: "order/v1"}, []Snapshot{sn}); err != nil {
		t.Fatal(err)
	}
	raw, err := r.client.Get(ctx, "chronicle:{order.3}:s:o-1").Bytes()
	if err != nil {
		t.Fatalf("snapshot not at chronicle:{order.3}:s:o-1: %v", err)
	}
	if want := fixedHeader + 1 + len(sn.Stamp) + len(sn.Data) + crcSize; len(raw) != want {
		t.Fatalf("stored snapshot is %d bytes, want %d (header, stamp, data as is, checksum)", len(raw), want)
	}
	if !strings.Contains(string(raw), string(sn.Data)) {
		t.Fatal("the aggregate's bytes are not stored as they are")
	}
	if n, err := r.client.Exists(ctx, "chronicle:{order.3}:cp").Result(); err != nil || n != 1 {
		t.Fatalf("checkpoint not at chronicle:{order.3}:cp: %d, %v", n, err)
	}
}

func TestRedisWrongTypeKey(t *testing.T) {
	srv := redistest.Start(t)
	r := openRedis(t, srv.URL())
	ctx := testCtx(t)
	if err := r.client.RPush(ctx, r.snapshotKey("order", 0, "x"), "a list").Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Load(ctx, "order", 0, "x"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Load of a list key: %v, want ErrCorrupt", err)
	}
	if m, err := r.LoadMany(ctx, "order", 0, []string{"x"}); err != nil || len(m) != 0 {
		t.Fatalf("LoadMany of a list key: %v, %v; want it missing", m, err)
	}
	mustSave(t, r, "order", 0, nil, snap("x", 1, "X"))
	sameSnapshot(t, mustLoad(t, r, "order", 0, "x"), snap("x", 1, "X"))
}

func TestRedisDropPartitionLeavesForeignKeys(t *testing.T) {
	srv := redistest.Start(t)
	r := openRedis(t, srv.URL())
	ctx := testCtx(t)
	foreign := []string{"unrelated", r.tag("order", 1) + ":other", "other:{order.1}:s:x"}
	for _, k := range foreign {
		if err := r.client.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	mustSave(t, r, "order", 1, &Checkpoint{Offset: 1}, snap("x", 1, "X"))
	if err := r.DropPartition(ctx, "order", 1); err != nil {
		t.Fatal(err)
	}
	if n, err := r.client.Exists(ctx, foreign...).Result(); err != nil || n != int64(len(foreign)) {
		t.Fatalf("DropPartition removed keys that are not its own: %d of %d left, %v", n, len(foreign), err)
	}
}

// A server that accepts connections and never answers must not hold a call
// past its context's deadline.
func TestRedisHungServerHonoursDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	r, err := Open("redis://" + ln.Addr().String() + "/0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const deadline = 300 * time.Millisecond
	for name, call := range map[string]func(ctx context.Context) error{
		"Load": func(ctx context.Context) error { _, _, err := r.Load(ctx, "order", 0, "a"); return err },
		"Save": func(ctx context.Context) error { return r.Save(ctx, "order", 0, nil, []Snapshot{snap("a", 1, "A")}) },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		cancel()
		if err == nil {
			t.Errorf("%s against a silent server succeeded", name)
		}
		if took > deadline+time.Second {
			t.Errorf("%s against a silent server took %v; the deadline was %v", name, took, deadline)
		}
	}
}

func TestRedisPasswordNeverInErrors(t *testing.T) {
	const pw = "Sup3r-s3cret"
	srv := redistest.Start(t, redistest.WithPassword(pw))
	ctx := testCtx(t)

	good := openRedis(t, srv.URL())
	mustSave(t, good, "order", 0, nil, snap("a", 1, "A"))

	wrong := openRedis(t, "redis://:"+pw+"-wrong@"+srv.Addr+"/0")
	_, _, err := wrong.Load(ctx, "order", 0, "a")
	if err == nil {
		t.Fatal("Load with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("error shows the password: %v", err)
	}

	for _, bad := range []string{
		"redis://:" + pw + "@127.0.0.1:notaport/0",
		"redis://:" + pw + "@127.0.0.1:6379/notadb",
		"redis://:" + pw + "@127.0.0.1:6379/0?no_such_option=1",
		"redis://:" + pw + "@h1,h2/3",
		"redis://:" + pw + "%zz@127.0.0.1/0",
		"redis://:" + pw + "/x@127.0.0.1/0",
		"redis://:" + pw + "?x@127.0.0.1/0",
		"redis://:" + pw + "#x@127.0.0.1/0",
		"http://:" + pw + "@127.0.0.1/0",
		"redis://h1/0?sentinel_master=m&sentinel_password=" + pw + "&cluster=true",
		"redis://h1/0?sentinel_password=" + pw + "&dial_timeout=soon",
	} {
		_, err := Open(bad)
		if err == nil {
			t.Errorf("Open(%q) succeeded", bad)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(%q) = %v; want ErrInvalid", bad, err)
		}
		if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%q) error shows the password: %v", bad, err)
		}
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		name string
		url  string
		want func(t *testing.T, o *redis.UniversalOptions)
	}{
		{"a single node with defaults", "redis://localhost", func(t *testing.T, o *redis.UniversalOptions) {
			if len(o.Addrs) != 1 || o.Addrs[0] != "localhost:6379" || o.DB != 0 || o.IsClusterMode || o.MasterName != "" || o.TLSConfig != nil {
				t.Fatalf("%+v", o)
			}
			if !o.ContextTimeoutEnabled {
				t.Fatal("ContextTimeoutEnabled is off")
			}
		}},
		{"user, password, database and options", "redis://app:p%40ss%3Aw%2Frd@10.0.0.1:6380/2?dial_timeout=3&read_timeout=250ms&pool_size=7&client_name=chronicle", func(t *testing.T, o *redis.UniversalOptions) {
			if o.Username != "app" || o.Password != "p@ss:w/rd" || o.DB != 2 || o.Addrs[0] != "10.0.0.1:6380" {
				t.Fatalf("%+v", o)
			}
			if o.DialTimeout != 3*time.Second || o.ReadTimeout != 250*time.Millisecond || o.PoolSize != 7 || o.ClientName != "chronicle" {
				t.Fatalf("options not passed on: %+v", o)
			}
		}},
		{"TLS", "rediss://cache.example:6380/0?skip_verify=true", func(t *testing.T, o *redis.UniversalOptions) {
			if o.TLSConfig == nil || o.TLSConfig.ServerName != "cache.example" || !o.TLSConfig.InsecureSkipVerify {
				t.Fatalf("TLS config %+v", o.TLSConfig)
			}
		}},
		{"a host list is a Cluster", "redis://:pw@a:7000,b:7001, c:7002", func(t *testing.T, o *redis.UniversalOptions) {
			if !o.IsClusterMode || strings.Join(o.Addrs, " ") != "a:7000 b:7001 c:7002" || o.Password != "pw" {
				t.Fatalf("%+v", o)
			}
		}},
		{"cluster=true with one seed", "rediss://seed:7000?cluster=true", func(t *testing.T, o *redis.UniversalOptions) {
			if !o.IsClusterMode || len(o.Addrs) != 1 || o.TLSConfig == nil || o.TLSConfig.ServerName != "" {
				t.Fatalf("%+v (TLS %+v): want Cluster with the server name taken per node", o, o.TLSConfig)
			}
		}},
		{"Sentinel", "redis://:datapw@s1:26379,s2/1?sentinel_master=mymaster&sentinel_password=sentpw", func(t *testing.T, o *redis.UniversalOptions) {
			if o.MasterName != "mymaster" || o.IsClusterMode || strings.Join(o.Addrs, " ") != "s1:26379 s2:6379" || o.DB != 1 {
				t.Fatalf("%+v", o)
			}
			if o.Password != "datapw" || o.SentinelPassword != "sentpw" {
				t.Fatalf("passwords: data %q, sentinel %q", o.Password, o.SentinelPassword)
			}
		}},
		{"IPv6", "redis://[::1]:6390,[::2]", func(t *testing.T, o *redis.UniversalOptions) {
			if strings.Join(o.Addrs, " ") != "[::1]:6390 [::2]:6379" {
				t.Fatalf("%v", o.Addrs)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseURL(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			tt.want(t, o)
			if c := redis.NewUniversalClient(o); c != nil {
				c.Close()
			}
		})
	}

	for _, bad := range []string{
		"",
		"localhost:6379",
		"redis://",
		"redis://a,,b",
		"redis://a:0",
		"redis://::1",
		"redis://a,b/1",
		"redis://a,b?cluster=false",
		"redis://a?cluster=maybe",
		"redis://a?sentinel_password=x",
		"redis://a/0/1",
	} {
		if _, err := ParseURL(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseURL(%q) = %v; want ErrInvalid", bad, err)
		}
	}
}

func TestNewRedisValidates(t *testing.T) {
	if _, err := NewRedis(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewRedis(nil) = %v; want ErrInvalid", err)
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	if _, err := NewRedis(c, WithKeyPrefix("a{b}")); !errors.Is(err, ErrInvalid) {
		t.Errorf("a prefix with braces: %v; want ErrInvalid", err)
	}
}

func TestRedisCloseOwnsOnlyOpenedClients(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testCtx(t)

	opened, err := Open(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := opened.Close(); err != nil {
		t.Fatal(err)
	}
	if err := opened.client.Ping(ctx).Err(); !errors.Is(err, redis.ErrClosed) {
		t.Errorf("the client Open created is still open after Close: %v", err)
	}

	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	given, err := NewRedis(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := given.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Errorf("Close closed the caller's client: %v", err)
	}
}

// A Save that Redis refuses for lack of memory writes nothing: the script
// does every read before its first write, and Redis only refuses a script's
// first write.
func TestRedisOutOfMemorySaveWritesNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.WithArgs("--maxmemory", "8mb", "--maxmemory-policy", "noeviction"))
	if srv.Miniredis() {
		t.Skip("miniredis has no maxmemory")
	}
	r := openRedis(t, srv.URL())
	ctx := testCtx(t)
	filler := strings.Repeat("x", 64<<10)
	for i := 0; ; i++ {
		err := r.client.Set(ctx, fmt.Sprintf("filler-%d", i), filler, 0).Err()
		if err != nil {
			if !strings.HasPrefix(err.Error(), "OOM") {
				t.Fatalf("filling Redis: %v", err)
			}
			break
		}
		if i > 10000 {
			t.Fatal("maxmemory is not enforced")
		}
	}
	snaps, ids := benchSnapshots(1)
	err := r.Save(ctx, "order", 0, &Checkpoint{Offset: 1000}, snaps)
	if err == nil {
		t.Fatal("Save succeeded on a full Redis")
	}
	noCheckpoint(t, r, "order", 0)
	if m, err := r.LoadMany(ctx, "order", 0, ids); err != nil || len(m) != 0 {
		t.Fatalf("a refused Save left %d snapshots (err %v)", len(m), err)
	}

	srv.FlushAll()
	mustSave(t, r, "order", 0, &Checkpoint{Offset: 1000}, snaps...)
	mustCheckpoint(t, r, "order", 0)
}

// TestRedisOutOfMemoryRefusesLeasedWritesWhole runs the documented setting
// (maxmemory with noeviction) into its limit: a leased save and a claim are
// refused whole and change nothing, reads keep working under the lease.
func TestRedisOutOfMemoryRefusesLeasedWritesWhole(t *testing.T) {
	srv := redistest.Start(t)
	s := openRedis(t, srv.URL())
	ctx := testCtx(t)
	if _, _, err := s.Claim(ctx, "order", 0, "E1"); err != nil {
		t.Fatal(err)
	}
	l, err := s.SaveLeased(ctx, "order", 0, Lease{Epoch: "E1"}, &Checkpoint{Offset: 3, Stamp: "order/v1"}, []Snapshot{snap("a", 1, "A")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.client.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.client.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.client.ConfigSet(context.Background(), "maxmemory", "0") })
	if _, err := s.SaveLeased(ctx, "order", 0, l, &Checkpoint{Offset: 8, Stamp: "order/v1"}, []Snapshot{snap("a", 2, "A2"), snap("b", 0, "B")}); err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("SaveLeased at maxmemory: %v, want an OOM error", err)
	}
	if _, _, err := s.Claim(ctx, "order", 0, "E2"); err == nil {
		t.Fatal("Claim at maxmemory succeeded")
	}
	got, err := s.LoadLeased(ctx, "order", 0, l, []string{"a", "b"})
	if err != nil {
		t.Fatalf("LoadLeased at maxmemory: %v; reads must keep working", err)
	}
	if len(got) != 1 || got["a"].Version != 1 {
		t.Fatalf("after a refused save the store holds %v; want a@1 only", got)
	}
	if cp := mustCheckpoint(t, s, "order", 0); cp.Offset != 3 {
		t.Fatalf("after a refused save the checkpoint is at %d, want 3", cp.Offset)
	}
}
