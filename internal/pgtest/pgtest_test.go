package pgtest_test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chronicle-es/chronicle/internal/pgtest"
)

func TestServerRunsQueriesAndStopsWithItsBackends(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := srv.CreateDatabase("app")
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	var db string
	var sum int
	if err := conn.QueryRow(ctx, "SELECT current_database(), 40 + 2").Scan(&db, &sum); err != nil {
		t.Fatal(err)
	}
	if db != "app" || sum != 42 {
		t.Errorf("got database %q and %d, want app and 42", db, sum)
	}
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	srv.Stop()
	if _, err := pgx.Connect(ctx, url); err == nil {
		t.Error("the server still accepts connections after Stop")
	}
	// The backend that served us is gone too (no process left behind).
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		if out, _ := exec.Command("ps", "-o", "comm=", "-p", strconv.Itoa(pid)).Output(); strings.Contains(string(out), "postgres") {
			t.Errorf("backend %d outlived Stop", pid)
		}
	}
}
