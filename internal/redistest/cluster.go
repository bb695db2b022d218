package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterMasters is the number of masters StartCluster creates: the
// smallest cluster redis-cli --cluster create accepts.
const clusterMasters = 3

// Cluster is a Redis Cluster of three masters owned by a test.
type Cluster struct {
	addrs []string
	procs []*process
}

// StartCluster starts three redis-server masters with cluster mode on, joins
// them with redis-cli --cluster create and waits until every node reports
// cluster_state:ok. The nodes are stopped in t.Cleanup.
//
// Without redis-server or redis-cli on PATH the test is skipped, or fails
// when CHRONICLE_TEST_REQUIRE_REDIS=1.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv(RequireEnv) == "1" {
				t.Fatalf("redistest: %s is not on PATH and %s=1 requires a real Redis Cluster; install redis-server (apt-get install redis-server) or unset %s", bin, RequireEnv, RequireEnv)
			}
			t.Skipf("redistest: %s is not on PATH; skipping the Redis Cluster test (miniredis has no cluster mode)", bin)
		}
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		c, err := startCluster(t)
		if err == nil {
			t.Cleanup(c.stop)
			return c
		}
		lastErr = err
	}
	t.Fatalf("redistest: starting a Redis Cluster: %v", lastErr)
	return nil
}

func startCluster(t testing.TB) (*Cluster, error) {
	c := &Cluster{}
	for i := 0; i < clusterMasters; i++ {
		port, err := freePort(true)
		if err != nil {
			c.stop()
			return nil, fmt.Errorf("finding free ports: %w", err)
		}
		dir := t.TempDir()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p, err := startProcess(filepath.Join(dir, "redis.log"), []string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", dir,
			"--daemonize", "no",
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "5000",
		})
		if err != nil {
			c.stop()
			return nil, err
		}
		c.procs = append(c.procs, p)
		c.addrs = append(c.addrs, addr)
		if err := p.waitReady(addr, ""); err != nil {
			c.stop()
			return nil, err
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		c.stop()
		return nil, fmt.Errorf("redis-cli --cluster create %s: %w\n%s", strings.Join(c.addrs, " "), err, out)
	}
	if err := c.waitOK(ctx); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// waitOK polls CLUSTER INFO on every node until each says cluster_state:ok
// and knows all nodes and slots.
func (c *Cluster) waitOK(ctx context.Context) error {
	for _, addr := range c.addrs {
		cl := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		var last string
		for {
			info, err := cl.ClusterInfo(ctx).Result()
			if err == nil {
				last = info
				if infoField(info, "cluster_state") == "ok" &&
					infoField(info, "cluster_known_nodes") == strconv.Itoa(clusterMasters) &&
					infoField(info, "cluster_slots_ok") == "16384" {
					break
				}
			} else {
				last = err.Error()
			}
			select {
			case <-ctx.Done():
				cl.Close()
				return fmt.Errorf("node %s did not reach cluster_state:ok: %w; last CLUSTER INFO:\n%s", addr, ctx.Err(), last)
			case <-time.After(50 * time.Millisecond):
			}
		}
		cl.Close()
	}
	return nil
}

// Addrs returns the host:port of every master.
func (c *Cluster) Addrs() []string { return append([]string(nil), c.addrs...) }

func (c *Cluster) stop() {
	for _, p := range c.procs {
		_ = p.stop()
	}
	c.procs = nil
}
