// Package promtest runs Debian's Prometheus programs for tests: a real
// Prometheus server that scrapes the test's targets and answers PromQL over
// its HTTP API, and promtool. Without them (apt-get install prometheus) the
// tests that need them skip, unless CHRONICLE_TEST_REQUIRE_PROMETHEUS is
// set, as CI sets it: then they fail.
package promtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/internal/proctest"
)

// RequireEnv, when set, turns a missing Prometheus program from a skip into
// a failure.
const RequireEnv = "CHRONICLE_TEST_REQUIRE_PROMETHEUS"

// Tool returns the path of the Prometheus program name (prometheus,
// promtool), skipping the test when it is not installed unless RequireEnv
// is set.
func Tool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("%s is not installed (apt-get install prometheus) and %s is set", name, RequireEnv)
		}
		t.Skipf("%s is not installed: apt-get install prometheus", name)
	}
	return path
}

// CheckMetrics runs promtool check metrics on a text exposition and fails
// the test with promtool's findings when it refuses it.
func CheckMetrics(t testing.TB, exposition []byte) {
	t.Helper()
	check := exec.Command(Tool(t, "promtool"), "check", "metrics")
	check.Stdin = bytes.NewReader(exposition)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// Server is a running Prometheus server.
type Server struct {
	// URL is its base URL, e.g. http://127.0.0.1:9090.
	URL  string
	proc *proctest.Process
	http *http.Client
}

// Start runs a Prometheus server, with its storage in a temporary
// directory, that scrapes targets (host:port, path /metrics) every second
// as job "chronicle". It returns once the server is ready; the test's end
// stops it.
func Start(t testing.TB, targets ...string) *Server {
	t.Helper()
	bin := Tool(t, "prometheus")
	dir := t.TempDir()
	quoted := make([]string, len(targets))
	for i, target := range targets {
		quoted[i] = strconv.Quote(target)
	}
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: chronicle\n    static_configs:\n      - targets: [%s]\n",
		strings.Join(quoted, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := proctest.FreeAddr(t)
	s := &Server{URL: "http://" + addr, http: &http.Client{Timeout: 10 * time.Second}}
	s.proc = proctest.Start(t, exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr))
	s.proc.WaitFor(t, regexp.MustCompile(`Server is ready to receive web requests`), time.Minute)
	return s
}

// Output returns what the server logged so far.
func (s *Server) Output() string { return s.proc.Output() }

// Query runs the instant PromQL query q through the HTTP API and returns
// its value when the answer is exactly one sample, or else an error saying
// what came back.
func (s *Server) Query(q string) (float64, error) {
	resp, err := s.http.Get(s.URL + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, fmt.Errorf("querying %s: %w", q, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("reading the answer to %s: %w", q, err)
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" || len(r.Data.Result) != 1 {
		return 0, fmt.Errorf("%s: want one sample, got HTTP %d %s", q, resp.StatusCode, body)
	}
	v, _ := r.Data.Result[0].Value[1].(string)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: the sample %q is not a number", q, v)
	}
	return f, nil
}

// Await runs q every half second until it returns want, and fails the test
// with the last answer and the server's log when timeout passes first (a
// hang guard: a scrape comes every second).
func (s *Server) Await(t testing.TB, q string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := s.Query(q)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus answers %s = %v (%v) after %s, want %v\n%s", q, got, err, timeout, want, s.Output())
		}
		time.Sleep(500 * time.Millisecond)
	}
}
