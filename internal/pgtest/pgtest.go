// Package pgtest runs a real PostgreSQL server for a test.
//
// Start finds the PostgreSQL binaries (initdb and postgres next to pg_ctl or
// initdb on PATH, else the newest /usr/lib/postgresql/*/bin), creates a
// cluster in a new temporary directory with initdb, runs postgres on a free
// 127.0.0.1 port and waits until it accepts connections:
//
//	srv := pgtest.Start(t)
//	pool, err := pgxpool.New(ctx, srv.URL())
//
// At the end of the test the server is stopped the way `pg_ctl stop -m
// immediate` does it (SIGQUIT to the postmaster, SIGKILL if it lingers) and
// the directory is removed. On Linux the postmaster also gets SIGKILL when the
// test binary dies, so no server outlives its test.
//
// PostgreSQL refuses to run as root. When the test runs as root, initdb and
// postgres run as the "postgres" user (which Debian's postgresql package
// creates), and the directory is given to that user.
//
// When PostgreSQL is not installed the test is skipped; setting
// CHRONICLE_TEST_REQUIRE_POSTGRES=1 (as CI does) makes that a failure, so a
// green run there always means a real server was used.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// RequireEnv is the environment variable that, set to "1", makes a missing
// PostgreSQL a test failure instead of a skip.
const RequireEnv = "CHRONICLE_TEST_REQUIRE_POSTGRES"

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
)

// Server is one PostgreSQL server owned by a test. Its methods may be called
// from any goroutine.
type Server struct {
	// Addr is the server's host:port on 127.0.0.1.
	Addr string

	t       testing.TB
	dir     string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	stop    sync.Once
}

// Start starts a PostgreSQL server for the test and registers its shutdown
// with t.Cleanup. It skips the test when PostgreSQL is not installed (fails
// when CHRONICLE_TEST_REQUIRE_POSTGRES=1) and fails it when the server does
// not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("pgtest: %v; %s=1 requires it: install it (apt-get install postgresql) or unset %s", err, RequireEnv, RequireEnv)
		}
		t.Skipf("pgtest: %v; skipping (set %s=1 to make this a failure)", err, RequireEnv)
	}
	cred, err := credential()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatalf("pgtest: creating a directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("pgtest: giving %s to the postgres user: %v", dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync")
	initdb.SysProcAttr = sysProcAttr(cred)
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	s := &Server{t: t, dir: dir, logPath: filepath.Join(dir, "postgres.log")}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("pgtest: finding a free port: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.launch(bin, data, port, cred); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
		// Most likely another process took the port between the probe
		// and postgres's bind: try another one.
	}
	t.Fatalf("pgtest: starting postgres: %v", lastErr)
	return nil
}

// URL returns a connection URL for database "postgres" as user "postgres"
// (trust authentication, no TLS).
func (s *Server) URL() string { return s.DatabaseURL("postgres") }

// DatabaseURL returns the connection URL of database name on the server.
func (s *Server) DatabaseURL(name string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: s.Addr, Path: "/" + name, RawQuery: "sslmode=disable"}
	return u.String()
}

// CreateDatabase creates a new, empty database and returns its URL. It fails
// the test on error.
func (s *Server) CreateDatabase(name string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		s.t.Fatalf("pgtest: connecting to %s: %v", s.Addr, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		s.t.Fatalf("pgtest: creating database %q: %v", name, err)
	}
	return s.DatabaseURL(name)
}

// Stop stops the server at once, as `pg_ctl stop -m immediate` does: SIGQUIT
// to the postmaster, which ends every backend; SIGKILL after 10s. Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	s.stop.Do(func() {
		if err := s.halt(); err != nil {
			s.t.Errorf("pgtest: stopping postgres on %s: %v", s.Addr, err)
		}
	})
}

func (s *Server) halt() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGQUIT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling pid %d: %w", s.cmd.Process.Pid, err)
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	return fmt.Errorf("pid %d ignored SIGQUIT for %v and was killed", s.cmd.Process.Pid, stopTimeout)
}

// launch runs postgres on port and waits until it accepts connections.
func (s *Server) launch(bin, data string, port int, cred *syscall.Credential) error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening the log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+s.dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=100")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr(cred)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running postgres: %w", err)
	}
	s.cmd, s.exited, s.waitErr = cmd, make(chan struct{}), nil
	exited := s.exited
	go func() {
		s.waitErr = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(startTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("postgres exited early (%v); its log:\n%s", s.waitErr, s.logTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.URL())
		if err == nil {
			var pid int
			err = conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid)
			conn.Close(ctx)
			cancel()
			if err == nil {
				if own := s.ownsData(data); !own {
					_ = s.halt()
					return fmt.Errorf("another server answers on %s", s.Addr)
				}
				return nil
			}
		} else {
			cancel()
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	_ = s.halt()
	return fmt.Errorf("postgres did not accept connections on %s within %v (last error: %v); its log:\n%s", s.Addr, startTimeout, lastErr, s.logTail())
}

// ownsData reports whether the server answering is ours: postmaster.pid in
// our data directory names our process.
func (s *Server) ownsData(data string) bool {
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return false
	}
	first, _, _ := bytes.Cut(b, []byte("\n"))
	return string(first) == strconv.Itoa(s.cmd.Process.Pid)
}

func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// binDir returns the directory holding initdb and postgres.
func binDir() (string, error) {
	var candidates []string
	for _, name := range []string{"pg_ctl", "initdb"} {
		if p, err := exec.LookPath(name); err == nil {
			if real, err := filepath.EvalSymlinks(p); err == nil {
				candidates = append(candidates, filepath.Dir(real))
			}
		}
	}
	installed, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(installed, func(i, j int) bool { return version(installed[i]) > version(installed[j]) })
	candidates = append(candidates, installed...)
	for _, dir := range candidates {
		if isFile(filepath.Join(dir, "initdb")) && isFile(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	return "", errors.New("PostgreSQL is not installed (no initdb and postgres next to pg_ctl on PATH or in /usr/lib/postgresql/*/bin)")
}

// version is the major version in a /usr/lib/postgresql/<v>/bin path.
func version(bin string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return v
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// credential returns the postgres user's credential when running as root
// (PostgreSQL refuses root), else nil.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL needs another user, and there is no \"postgres\" user (%v): install Debian's postgresql package, which creates it, or run the tests as another user", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("the postgres user's ids %s:%s: %w", u.Uid, u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// freePort returns a 127.0.0.1 TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
