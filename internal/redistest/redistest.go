// Package redistest runs real Redis servers for tests.
//
// # One server
//
// Start launches a redis-server on a free 127.0.0.1 port with its own
// temporary directory and persistence switched off, waits until it answers
// PING and stops it when the test ends:
//
//	srv := redistest.Start(t)
//	store, err := snapshots.Open(srv.URL())
//
// Stop and Restart simulate Redis going down and coming back on the same
// address. A restarted server comes back empty, as a redis-server without
// persistence does.
//
// # Without redis-server
//
// When redis-server is not on PATH, Start falls back to an in-process
// miniredis and says so with t.Log. Setting the environment variable
// CHRONICLE_TEST_REQUIRE_REDIS=1 (as CI does) turns that fallback into a
// test failure, so a green run there always means real Redis was used.
//
// # Cluster
//
// StartCluster launches three masters with cluster mode on and joins them
// with redis-cli --cluster create. There is no miniredis fallback: the test
// is skipped when redis-server is missing, or fails when
// CHRONICLE_TEST_REQUIRE_REDIS=1.
package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// RequireEnv is the environment variable that, set to "1", makes a missing
// redis-server a test failure instead of a fallback (Start) or a skip
// (StartCluster).
const RequireEnv = "CHRONICLE_TEST_REQUIRE_REDIS"

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 15 * time.Second

// stopTimeout bounds how long a server may take to exit after SIGTERM before
// it is killed.
const stopTimeout = 5 * time.Second

// Option configures Start.
type Option func(*config)

type config struct {
	password string
	extra    []string
}

// WithPassword starts the server with requirepass set to password. URL then
// carries the password and FlushAll authenticates with it.
func WithPassword(password string) Option {
	return func(c *config) { c.password = password }
}

// WithArgs passes extra command-line arguments to redis-server, for example
// "--maxmemory", "10mb". They are ignored by the miniredis fallback.
func WithArgs(args ...string) Option {
	return func(c *config) { c.extra = append(c.extra, args...) }
}

// Server is one Redis server owned by a test. Its methods may be called from
// any goroutine.
type Server struct {
	// Addr is the server's host:port. It stays the same across Restart.
	Addr string

	t        testing.TB
	cfg      config
	port     int
	dir      string
	miniOnly bool

	mu   sync.Mutex
	proc *process             // running redis-server, nil when stopped
	mini *miniredis.Miniredis // fallback server, nil when redis-server is used
}

// Start starts a Redis server for the test and registers its shutdown with
// t.Cleanup. It fails the test if the server does not come up.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	s := &Server{t: t, cfg: cfg}
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("redistest: redis-server is not on PATH and %s=1 forbids the miniredis fallback; install it (apt-get install redis-server) or unset %s", RequireEnv, RequireEnv)
		}
		t.Log("redistest: redis-server is not on PATH; falling back to miniredis (set " + RequireEnv + "=1 to make this an error)")
		s.startMini()
		return s
	}
	s.dir = t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort(false)
		if err != nil {
			t.Fatalf("redistest: finding a free port: %v", err)
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p, err := s.launch()
		if err == nil {
			s.proc = p
			t.Cleanup(s.Stop)
			return s
		}
		// Most likely another process took the port between our probe and
		// redis-server's bind; try another one.
		lastErr = err
	}
	t.Fatalf("redistest: starting redis-server: %v", lastErr)
	return nil
}

func (s *Server) startMini() {
	m := miniredis.NewMiniRedis()
	if s.cfg.password != "" {
		m.RequireAuth(s.cfg.password)
	}
	if err := m.Start(); err != nil {
		s.t.Fatalf("redistest: starting miniredis: %v", err)
	}
	s.mini = m
	s.miniOnly = true
	s.Addr = m.Addr()
	s.t.Cleanup(s.Stop)
}

// Miniredis reports whether the server is the miniredis fallback rather than
// a real redis-server.
func (s *Server) Miniredis() bool { return s.miniOnly }

// Password returns the requirepass password, or "" when none is set.
func (s *Server) Password() string { return s.cfg.password }

// URL returns the server's address as redis://[:password@]127.0.0.1:port/0.
func (s *Server) URL() string {
	if s.cfg.password != "" {
		return "redis://:" + escapeUserinfo(s.cfg.password) + "@" + s.Addr + "/0"
	}
	return "redis://" + s.Addr + "/0"
}

// escapeUserinfo percent-encodes every byte that is not unreserved, so any
// password survives a URL round trip.
func escapeUserinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// Stop shuts the server down. Clients see connection errors until Restart.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mini != nil {
		s.mini.Close()
		return
	}
	if s.proc == nil {
		return
	}
	if err := s.proc.stop(); err != nil {
		s.t.Errorf("redistest: stopping redis-server on %s: %v", s.Addr, err)
	}
	s.proc = nil
}

// Restart stops the server if it runs and starts it again, empty, on the
// same address. It fails the test if the server does not come back.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mini != nil {
		// The port was just released; retry briefly in case the kernel or
		// another test holds it for a moment.
		deadline := time.Now().Add(startTimeout)
		for {
			err := s.mini.StartAddr(s.Addr)
			if err == nil {
				s.mini.FlushAll()
				return
			}
			if time.Now().After(deadline) {
				s.t.Fatalf("redistest: restarting miniredis on %s: %v", s.Addr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	deadline := time.Now().Add(startTimeout)
	for {
		p, err := s.launch()
		if err == nil {
			s.proc = p
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redistest: restarting redis-server on %s: %v", s.Addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FlushAll deletes every key on the server. It fails the test on error.
func (s *Server) FlushAll() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mini != nil {
		s.mini.FlushAll()
		return
	}
	c := s.client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := c.FlushAll(ctx).Err(); err != nil {
		s.t.Fatalf("redistest: FLUSHALL on %s: %v", s.Addr, err)
	}
}

func (s *Server) client() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:       s.Addr,
		Password:   s.cfg.password,
		MaxRetries: -1,
	})
}

// launch starts redis-server on s.port and waits until it is this process
// that answers PING.
func (s *Server) launch() (*process, error) {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
	}
	if s.cfg.password != "" {
		args = append(args, "--requirepass", s.cfg.password)
	}
	args = append(args, s.cfg.extra...)
	p, err := startProcess(filepath.Join(s.dir, "redis.log"), args)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(s.Addr, s.cfg.password); err != nil {
		_ = p.stop()
		return nil, err
	}
	return p, nil
}

// process is one running redis-server.
type process struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has exited
	waitErr error         // set before exited is closed
}

func startProcess(logPath string, args []string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log file: %w", err)
	}
	args = append(args, "--logfile", "")
	cmd := exec.Command("redis-server", args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("running redis-server: %w", err)
	}
	p := &process{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// waitReady polls addr until the server answers PING and reports our pid,
// so a foreign server that grabbed the port is never mistaken for ours.
func (p *process) waitReady(addr, password string) error {
	c := redis.NewClient(&redis.Options{
		Addr:        addr,
		Password:    password,
		MaxRetries:  -1,
		DialTimeout: time.Second,
		ReadTimeout: time.Second,
	})
	defer c.Close()
	deadline := time.Now().Add(startTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("redis-server exited early (%v); its log:\n%s", p.waitErr, p.logTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := c.Info(ctx, "server").Result()
		cancel()
		if err == nil {
			if pid := infoField(info, "process_id"); pid != strconv.Itoa(p.cmd.Process.Pid) {
				return fmt.Errorf("another server (pid %s) answers on %s", pid, addr)
			}
			return nil
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server did not answer on %s within %v (last error: %v); its log:\n%s", addr, startTimeout, lastErr, p.logTail())
}

// stop sends SIGTERM, waits for the exit and kills the process if it takes
// longer than stopTimeout.
func (p *process) stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling pid %d: %w", p.cmd.Process.Pid, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("pid %d ignored SIGTERM for %v and was killed", p.cmd.Process.Pid, stopTimeout)
}

func (p *process) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// infoField returns the value of name in an INFO or CLUSTER INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// freePort returns a 127.0.0.1 TCP port that was free a moment ago. With
// bus set it also checks port+10000, which Redis Cluster uses for its bus.
func freePort(bus bool) (int, error) {
	if !bus {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	var lastErr error
	for range 100 {
		port := 20000 + rand.IntN(35000)
		l1, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			lastErr = err
			continue
		}
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		l1.Close()
		if err != nil {
			lastErr = err
			continue
		}
		l2.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port pair after 100 tries: %w", lastErr)
}
