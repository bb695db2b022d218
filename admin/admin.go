// Package admin is the HTTP server operators and orchestrators talk to:
// /metrics (Prometheus), /livez, /readyz and, when enabled, /debug/pprof/.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is where the admin server listens unless told otherwise.
const DefaultAddr = ":9400"

// Config configures the admin server.
type Config struct {
	// Addr is host:port to listen on; port 0 picks a free one.
	Addr string
	// Gatherer provides /metrics; nil serves none.
	Gatherer prometheus.Gatherer
	// Readiness answers /readyz: ready, or the reasons why not. Nil is
	// always ready.
	Readiness func() (ready bool, reasons []string)
	// Pprof serves /debug/pprof/ (profiles expose internals: keep the
	// admin port private).
	Pprof bool
	// Logger receives the server's errors; nil discards them.
	Logger *slog.Logger
}

// Server is a running admin server.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan error
}

// Start listens on cfg.Addr and serves until ctx ends or Close.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin server: listening on %s: %w (choose another --admin-addr, or \"off\")", cfg.Addr, err)
	}
	s := &Server{ln: ln, done: make(chan error, 1), srv: &http.Server{Handler: Handler(cfg), ReadHeaderTimeout: 5 * time.Second}}
	go func() { s.done <- s.srv.Serve(ln) }()
	go func() {
		select {
		case <-ctx.Done():
			s.Close()
		case <-s.done:
		}
	}()
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server within five seconds.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server: shutting down: %w", err)
	}
	return nil
}

// readiness is /readyz's body.
type readiness struct {
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons,omitempty"`
}

// Handler returns the admin routes, for embedding in a server of one's own.
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		r := readiness{Ready: true}
		if cfg.Readiness != nil {
			r.Ready, r.Reasons = cfg.Readiness()
		}
		w.Header().Set("Content-Type", "application/json")
		if !r.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		if err := json.NewEncoder(w).Encode(r); err != nil && cfg.Logger != nil {
			cfg.Logger.Warn("admin: writing /readyz", "err", err)
		}
	})
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
