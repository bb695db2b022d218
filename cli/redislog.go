package cli

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisLogger takes go-redis's own log lines (a failed dial, a connection a
// pool hook refused) into a program's slog logger, at WARN, tagged
// logger=go-redis. Without it go-redis prints them unstructured on stderr
// ("redis: 2026/01/02 03:04:05 pool.go:770: ..."), in the middle of run's
// JSON lines.
type redisLogger struct{ logger *slog.Logger }

// Printf implements go-redis's logging interface.
func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.logger.WarnContext(ctx, strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "), "logger", "go-redis")
}

// routeRedisLogs sends go-redis's log lines to logger. go-redis has one
// logger per process (redis.SetLogger): run and dev each set theirs as they
// start, so in a program that runs several of them at once, as only tests
// do, the last one started gets the lines of all.
func routeRedisLogs(logger *slog.Logger) { redis.SetLogger(redisLogger{logger: logger}) }
