package redistest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStartServesAndFlushes(t *testing.T) {
	srv := Start(t)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatalf("URL %q does not parse: %v", srv.URL(), err)
	}
	if opt.Addr != srv.Addr || !strings.HasPrefix(srv.Addr, "127.0.0.1:") {
		t.Fatalf("URL addr %q, Addr %q: want the same 127.0.0.1 address", opt.Addr, srv.Addr)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx := ctxT(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	srv.FlushAll()
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("after FlushAll EXISTS k = %d, %v; want 0, nil", n, err)
	}
	if !srv.Miniredis() {
		cfg, err := c.ConfigGet(ctx, "save").Result()
		if err != nil || cfg["save"] != "" {
			t.Fatalf("CONFIG GET save = %v, %v; want persistence off", cfg, err)
		}
	}
}

func TestStopThenRestartOnSameAddress(t *testing.T) {
	srv := Start(t)
	addr := srv.Addr
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	ctx := ctxT(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}

	srv.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded on a stopped server")
	}
	srv.Stop() // a second Stop is harmless

	srv.Restart()
	if srv.Addr != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, srv.Addr)
	}
	var err error
	for range 3 { // the pool may hand out a connection that died with the old process
		if err = c.Ping(ctx).Err(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("after Restart EXISTS k = %d, %v; want an empty server", n, err)
	}
}

func TestPasswordIsRequired(t *testing.T) {
	const pw = "s3cret/with:odd@chars"
	srv := Start(t, WithPassword(pw))
	if srv.Password() != pw {
		t.Fatalf("Password() = %q", srv.Password())
	}
	ctx := ctxT(t)

	anon := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("PING without password: %v; want NOAUTH", err)
	}

	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatalf("URL does not parse: %v", err)
	}
	if opt.Password != pw {
		t.Fatalf("URL carries password %q, want %q", opt.Password, pw)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING with password: %v", err)
	}
	srv.FlushAll() // authenticates
}

func TestStartCluster(t *testing.T) {
	cl := StartCluster(t)
	if len(cl.Addrs()) != 3 {
		t.Fatalf("Addrs() = %v, want 3 masters", cl.Addrs())
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer c.Close()
	ctx := ctxT(t)
	// Keys spread over all slots must all be writable: every slot is served.
	for i := range 50 {
		if err := c.Set(ctx, fmt.Sprintf("key-%d", i), i, 0).Err(); err != nil {
			t.Fatalf("SET key-%d: %v", i, err)
		}
	}
	var masters atomic.Int32 // ForEachMaster runs fn concurrently
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("master %s holds no keys", m.Options().Addr)
		}
		masters.Add(1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := masters.Load(); n != 3 {
		t.Fatalf("saw %d masters, want 3", n)
	}
}

// recorder is a testing.TB that records Fatal, Skip and Log calls instead of
// acting on them, to test what Start does without redis-server.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	fatal    string
	skipped  string
	logs     []string
	cleanups []func()
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatal = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}
func (r *recorder) Skipf(format string, args ...any) {
	r.mu.Lock()
	r.skipped = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}
func (r *recorder) Log(args ...any) {
	r.mu.Lock()
	r.logs = append(r.logs, fmt.Sprint(args...))
	r.mu.Unlock()
}
func (r *recorder) Cleanup(f func()) {
	r.mu.Lock()
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

// run calls f(r) on its own goroutine so Fatalf and Skipf can end it.
func (r *recorder) run(f func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func TestWithoutRedisServer(t *testing.T) {
	tests := []struct {
		name    string
		require string
		start   func(testing.TB)
		want    func(t *testing.T, r *recorder)
	}{
		{
			name:  "Start falls back to miniredis and logs it",
			start: func(tb testing.TB) { Start(tb) },
			want: func(t *testing.T, r *recorder) {
				if r.fatal != "" || len(r.logs) == 0 || !strings.Contains(r.logs[0], "miniredis") {
					t.Fatalf("fatal %q, logs %q; want a log about the miniredis fallback", r.fatal, r.logs)
				}
			},
		},
		{
			name:    "Start fails when real Redis is required",
			require: "1",
			start:   func(tb testing.TB) { Start(tb) },
			want: func(t *testing.T, r *recorder) {
				if !strings.Contains(r.fatal, RequireEnv) {
					t.Fatalf("fatal %q; want a failure naming %s", r.fatal, RequireEnv)
				}
			},
		},
		{
			name:  "StartCluster skips",
			start: func(tb testing.TB) { StartCluster(tb) },
			want: func(t *testing.T, r *recorder) {
				if r.skipped == "" || r.fatal != "" {
					t.Fatalf("skipped %q, fatal %q; want a skip", r.skipped, r.fatal)
				}
			},
		},
		{
			name:    "StartCluster fails when real Redis is required",
			require: "1",
			start:   func(tb testing.TB) { StartCluster(tb) },
			want: func(t *testing.T, r *recorder) {
				if !strings.Contains(r.fatal, RequireEnv) || r.skipped != "" {
					t.Fatalf("fatal %q, skipped %q; want a failure naming %s", r.fatal, r.skipped, RequireEnv)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir()) // an empty directory: no redis-server
			t.Setenv(RequireEnv, tt.require)
			r := &recorder{TB: t}
			r.run(tt.start)
			tt.want(t, r)
		})
	}
}

func TestMiniredisFallbackServesStopAndRestart(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv(RequireEnv, "")
	srv := Start(t, WithPassword("pw"))
	if !srv.Miniredis() {
		t.Fatal("Miniredis() = false without redis-server on PATH")
	}
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx := ctxT(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET on miniredis: %v", err)
	}
	srv.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded on a stopped miniredis")
	}
	srv.Restart()
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("after Restart EXISTS k = %d, %v; want an empty server", n, err)
	}
}
