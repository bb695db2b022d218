package deploy

import (
	"context"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"
)

// loadCompose loads and validates docker-compose.yml as `docker compose`
// would (the compose-spec schema, interpolation, consistency checks).
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	root := repoRoot(t)
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv([]string{}), // the file must not depend on the caller's environment
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

func env(s types.ServiceConfig, name string) string {
	if v, ok := s.Environment[name]; ok && v != nil {
		return *v
	}
	return ""
}

// chronicleServices are the services that run the image built from the
// Dockerfile, by name.
func chronicleServices(p *types.Project) map[string]types.ServiceConfig {
	out := map[string]types.ServiceConfig{}
	for name, s := range p.Services {
		if s.Build != nil && filepath.Base(s.Build.Dockerfile) == "Dockerfile" {
			out[name] = s
		}
	}
	return out
}

func TestComposeLoads(t *testing.T) {
	p := loadCompose(t)
	for _, want := range []string{"kafka", "redis", "prometheus"} {
		if _, ok := p.Services[want]; !ok {
			t.Errorf("no service %q", want)
		}
	}
	// Every bind-mounted file exists.
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("service %s mounts %s, which does not exist", name, v.Source)
			}
		}
	}
}

func TestComposeChronicleEnvironment(t *testing.T) {
	p := loadCompose(t)
	svcs := chronicleServices(p)
	if len(svcs) == 0 {
		t.Fatal("no service builds the Dockerfile")
	}
	for name, s := range svcs {
		if len(s.Command) == 0 {
			t.Errorf("%s: no command: say which subcommand it runs", name)
			continue
		}
		sub := s.Command[0]
		h := help(t, sub)
		for k := range s.Environment {
			if strings.HasPrefix(k, "CHRONICLE_") && !knowsEnv(t, sub, k) {
				t.Errorf("%s sets %s, which `chronicle %s` does not read (see `chronicle %s --help`)", name, k, sub, sub)
			} else if !strings.HasPrefix(k, "CHRONICLE_") && !runtimeEnv[k] {
				t.Errorf("%s sets %s: only CHRONICLE_* variables configure chronicle", name, k)
			}
		}
		for _, arg := range s.Command[1:] {
			if f, ok := strings.CutPrefix(arg, "--"); ok {
				f, _, _ = strings.Cut(f, "=")
				if !h.flags[f] {
					t.Errorf("%s passes %s, which `chronicle %s --help` does not list", name, arg, sub)
				}
			}
		}
		if !s.ReadOnly {
			t.Errorf("%s: read_only is not set; chronicle writes nothing to its filesystem", name)
		}
		if !slices.Contains(s.CapDrop, "ALL") {
			t.Errorf("%s: cap_drop does not hold ALL", name)
		}
	}
}

// TestComposeInstances: two or more `run` instances, each with its own
// transactional id, started after the topics exist, scraped by Prometheus on
// their admin port.
func TestComposeInstances(t *testing.T) {
	p := loadCompose(t)
	svcs := chronicleServices(p)
	txnIDs := map[string]string{}
	var instances []string
	topicSteps := map[string]string{} // prefix -> service
	for name, s := range svcs {
		switch s.Command[0] {
		case "run":
			instances = append(instances, name)
		case "topics":
			if len(s.Command) < 2 || !slices.Contains(s.Command, "--create") {
				t.Errorf("%s: want `topics PREFIX --create`, got %v", name, s.Command)
				continue
			}
			topicSteps[s.Command[1]] = name
			if s.Restart != "no" && s.Restart != "" {
				t.Errorf("%s is a one-shot step but restarts %q", name, s.Restart)
			}
		}
	}
	if len(instances) < 2 {
		t.Fatalf("want at least two `chronicle run` instances, got %v", instances)
	}
	slices.Sort(instances)

	// The topic steps cover every aggregate type the instances serve.
	runAggs := map[string]bool{}
	for _, name := range instances {
		aggs := env(svcs[name], "CHRONICLE_AGGREGATES")
		if aggs == "" {
			t.Errorf("%s: `chronicle run` needs CHRONICLE_AGGREGATES (it has no default)", name)
		}
		for _, pair := range strings.Split(aggs, ",") {
			prefix, _, _ := strings.Cut(strings.TrimSpace(pair), "=")
			runAggs[prefix] = true
		}
	}
	for prefix := range runAggs {
		if topicSteps[prefix] == "" {
			t.Errorf("no `chronicle topics %s --create` step, but the instances serve %s", prefix, prefix)
		}
	}

	kafka := p.Services["kafka"]
	var internal string
	for _, l := range strings.Split(env(kafka, "KAFKA_ADVERTISED_LISTENERS"), ",") {
		if name, addr, ok := strings.Cut(l, "://"); ok && name == env(kafka, "KAFKA_INTER_BROKER_LISTENER_NAME") {
			internal = addr
		}
	}
	for name, s := range svcs {
		if b := env(s, "CHRONICLE_BROKERS"); b != internal {
			t.Errorf("%s: CHRONICLE_BROKERS=%q, want Kafka's inside listener %q", name, b, internal)
		}
	}

	var targets []string
	for _, name := range instances {
		s := svcs[name]
		id := env(s, "CHRONICLE_TRANSACTIONAL_ID")
		if id == "" {
			t.Errorf("%s: no CHRONICLE_TRANSACTIONAL_ID (the default, chronicle-<hostname>, is the container id: new on every re-creation)", name)
		} else if other, dup := txnIDs[id]; dup {
			t.Errorf("%s and %s share the transactional id %q: they would fence each other", name, other, id)
		}
		txnIDs[id] = name
		if env(s, "CHRONICLE_REDIS") == "" {
			t.Errorf("%s: no CHRONICLE_REDIS: restores would replay everything", name)
		}
		// Started after Kafka, Redis and every topic step.
		for prefix, step := range topicSteps {
			if d, ok := s.DependsOn[step]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
				t.Errorf("%s does not wait for %s (topics %s) to complete successfully", name, step, prefix)
			}
		}
		if d, ok := s.DependsOn["kafka"]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s does not wait for kafka to be healthy", name)
		}
		// The admin port: CHRONICLE_ADMIN_ADDR, published, scraped.
		port := adminDefaultPort
		if a := env(s, "CHRONICLE_ADMIN_ADDR"); a != "" {
			_, ps, err := net.SplitHostPort(a)
			if err != nil {
				t.Errorf("%s: CHRONICLE_ADMIN_ADDR=%q: %v", name, a, err)
				continue
			}
			port, _ = strconv.Atoi(ps)
		}
		published := false
		for _, pc := range s.Ports {
			published = published || pc.Target == uint32(port)
		}
		if !published {
			t.Errorf("%s: the admin port %d is not published", name, port)
		}
		targets = append(targets, name+":"+strconv.Itoa(port))
	}

	// Prometheus scrapes exactly the instances, with the rules it mounts.
	prom := p.Services["prometheus"]
	mounts := map[string]string{} // container path -> host path
	for _, v := range prom.Volumes {
		mounts[v.Target] = v.Source
	}
	cfgPath := "/etc/prometheus/prometheus.yml"
	for _, c := range prom.Command {
		if v, ok := strings.CutPrefix(c, "--config.file="); ok {
			cfgPath = v
		}
	}
	host, ok := mounts[cfgPath]
	if !ok {
		t.Fatalf("prometheus: %s is not mounted", cfgPath)
	}
	b, err := os.ReadFile(host)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			MetricsPath   string `json:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, rf := range cfg.RuleFiles {
		in := rf
		if !filepath.IsAbs(in) {
			in = filepath.Join(filepath.Dir(cfgPath), rf)
		}
		if _, ok := mounts[in]; !ok {
			t.Errorf("prometheus.yml loads rules from %s, which the prometheus service does not mount", in)
		}
	}
	var scraped []string
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName != "chronicle" {
			continue
		}
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("job chronicle scrapes %s, want /metrics", sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			scraped = append(scraped, st.Targets...)
		}
	}
	slices.Sort(scraped)
	slices.Sort(targets)
	if !slices.Equal(scraped, targets) {
		t.Errorf("job chronicle scrapes %v, want the instances' admin ports %v", scraped, targets)
	}
}

// TestComposeKafka: a single KRaft node whose listeners fit together.
func TestComposeKafka(t *testing.T) {
	p := loadCompose(t)
	k := p.Services["kafka"]
	if !strings.HasPrefix(k.Image, "apache/kafka:") {
		t.Errorf("kafka image %q, want the official apache/kafka", k.Image)
	}
	for name := range k.Environment {
		if strings.Contains(name, "ZOOKEEPER") {
			t.Errorf("kafka sets %s: KRaft mode needs no ZooKeeper", name)
		}
	}
	roles := strings.Split(env(k, "KAFKA_PROCESS_ROLES"), ",")
	if !slices.Contains(roles, "broker") || !slices.Contains(roles, "controller") {
		t.Errorf("KAFKA_PROCESS_ROLES=%v, want broker,controller on the single node", roles)
	}
	// CLUSTER_ID: a UUID in base64url without padding, as kafka-storage wants.
	if id, err := base64.RawURLEncoding.DecodeString(env(k, "CLUSTER_ID")); err != nil || len(id) != 16 {
		t.Errorf("CLUSTER_ID %q is not 16 bytes of base64url (err %v)", env(k, "CLUSTER_ID"), err)
	}
	protocols := map[string]string{}
	for _, pm := range strings.Split(env(k, "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"), ",") {
		name, proto, _ := strings.Cut(pm, ":")
		protocols[name] = proto
	}
	listenPorts := map[string]string{}
	for _, l := range strings.Split(env(k, "KAFKA_LISTENERS"), ",") {
		name, addr, _ := strings.Cut(l, "://")
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Errorf("KAFKA_LISTENERS %q: %v", l, err)
		}
		if protocols[name] == "" {
			t.Errorf("listener %s has no security protocol in KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", name)
		}
		listenPorts[name] = port
	}
	published := map[string]bool{}
	for _, pc := range k.Ports {
		published[pc.Published] = true
	}
	hostReachable := false
	for _, l := range strings.Split(env(k, "KAFKA_ADVERTISED_LISTENERS"), ",") {
		name, addr, _ := strings.Cut(l, "://")
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Errorf("KAFKA_ADVERTISED_LISTENERS %q: %v", l, err)
			continue
		}
		if listenPorts[name] != port {
			t.Errorf("advertised listener %s on port %s, but it listens on %q", name, port, listenPorts[name])
		}
		if host == "localhost" || host == "127.0.0.1" {
			hostReachable = hostReachable || published[port]
		}
	}
	if !hostReachable {
		t.Error("no advertised listener is reachable from the host (localhost and a published port)")
	}
	ctrl := env(k, "KAFKA_CONTROLLER_LISTENER_NAMES")
	voters := env(k, "KAFKA_CONTROLLER_QUORUM_VOTERS")
	id, addr, _ := strings.Cut(voters, "@")
	if id != env(k, "KAFKA_NODE_ID") {
		t.Errorf("KAFKA_CONTROLLER_QUORUM_VOTERS %q does not name KAFKA_NODE_ID %s", voters, env(k, "KAFKA_NODE_ID"))
	}
	if _, port, _ := net.SplitHostPort(addr); port != listenPorts[ctrl] {
		t.Errorf("the quorum voter's port %s is not the %s listener's %q", port, ctrl, listenPorts[ctrl])
	}
	// Chronicle needs transactions: on one node, their log needs one replica.
	for _, rf := range []string{"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"} {
		if env(k, rf) != "1" {
			t.Errorf("%s=%q, want 1 on a single node", rf, env(k, rf))
		}
	}
	if k.HealthCheck == nil || len(k.HealthCheck.Test) == 0 {
		t.Error("kafka has no healthcheck: the topic steps and instances wait for service_healthy")
	}
}

func TestComposeRedis(t *testing.T) {
	p := loadCompose(t)
	r := p.Services["redis"]
	cmd := r.Command
	flag := func(name string) (string, bool) {
		i := slices.Index(cmd, name)
		if i < 0 || i+1 >= len(cmd) {
			return "", false
		}
		return cmd[i+1], true
	}
	if v, _ := flag("--maxmemory-policy"); v != "noeviction" {
		t.Errorf("redis --maxmemory-policy %q, want noeviction", v)
	}
	if v, ok := flag("--save"); !ok || v != "" {
		t.Errorf(`redis --save %q, want "" (no persistence needed)`, v)
	}
	if v, _ := flag("--appendonly"); v != "no" {
		t.Errorf("redis --appendonly %q, want no", v)
	}
	if r.HealthCheck == nil {
		t.Error("redis has no healthcheck")
	}
}
