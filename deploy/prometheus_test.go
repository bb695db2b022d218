package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/chronicle-es/chronicle/internal/promtest"
)

// promtool returns the path of promtool, or skips the test when it is not
// installed and CHRONICLE_TEST_REQUIRE_PROMETHEUS is unset.
func promtool(t *testing.T) string { return promtest.Tool(t, "promtool") }

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestPromtoolCheckRules(t *testing.T) {
	runPromtool(t, "check", "rules", "deploy/prometheus/alerts.yml")
}

// TestPromtoolTestRules runs the alerts' unit tests: each alert fires on
// made-up series shaped like Chronicle's, and stays quiet on others.
func TestPromtoolTestRules(t *testing.T) {
	runPromtool(t, "test", "rules", "deploy/prometheus/alerts_test.yml")
}

func TestPromtoolCheckConfig(t *testing.T) {
	runPromtool(t, "check", "config", "deploy/prometheus/prometheus.yml")
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Record      string            `json:"record"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func loadAlerts(t *testing.T) ruleFile {
	t.Helper()
	var rf ruleFile
	if err := yaml.Unmarshal(readFile(t, "deploy/prometheus/alerts.yml"), &rf); err != nil {
		t.Fatal(err)
	}
	return rf
}

// githubAnchors are the anchors GitHub makes of a Markdown file's headings.
func githubAnchors(md string) map[string]bool {
	out := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range h {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r > 127:
				b.WriteRune(r)
			}
		}
		out[b.String()] = true
	}
	return out
}

func TestAlertRules(t *testing.T) {
	rf := loadAlerts(t)
	anchors := githubAnchors(string(readFile(t, "deploy/README.md")))
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy/prometheus/alerts_test.yml"), &tests); err != nil {
		t.Fatal(err)
	}
	tested := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				tested[a.Alertname] = true
			}
		}
	}
	seen := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s is defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if s := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s has no %s", r.Alert, a)
				}
			}
			const readme = "/deploy/README.md#"
			if i := strings.Index(r.Annotations["runbook_url"], readme); i < 0 {
				t.Errorf("%s: runbook_url %q does not point into deploy/README.md", r.Alert, r.Annotations["runbook_url"])
			} else if a := r.Annotations["runbook_url"][i+len(readme):]; !anchors[a] {
				t.Errorf("%s: runbook_url's section #%s is not a heading of deploy/README.md", r.Alert, a)
			}
			if !tested[r.Alert] {
				t.Errorf("alert %s has no promtool test in alerts_test.yml that expects it to fire", r.Alert)
			}
			checkPromQL(t, "alert "+r.Alert, r.Expr, false)
		}
	}
	// The alerts the operator was promised.
	for _, want := range []string{"ChronicleConsumerLagGrowing", "ChroniclePartitionsStopped", "ChronicleTransactionAborts",
		"ChronicleSnapshotStoreFailing", "ChronicleSnapshotLeaseLost", "ChronicleRestoreTakingLong", "ChronicleInstanceNotReady"} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

var (
	promSelector  = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	promMatcher   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	promChronicle = regexp.MustCompile(`\bchronicle_[a-z0-9_]+`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
)

// metricOf resolves a series name to its metric: histograms' _bucket,
// _sum and _count series belong to the histogram.
func metricOf(name string) (string, metricSpec, bool) {
	if s, ok := chronicleMetrics[name]; ok {
		return name, s, true
	}
	if s, ok := foreignMetrics[name]; ok {
		return name, s, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if s, found := chronicleMetrics[base]; ok && found && s.kind == histogram {
			return base, s, true
		}
	}
	return "", metricSpec{}, false
}

// checkPromQL checks a PromQL expression against the metric contract: every
// chronicle_* name is a metric of the contract (a histogram's only through
// _bucket, _sum or _count), every other selected metric is a known one,
// label matchers use the metric's labels and values, and grouping labels
// exist on the metrics of the expression. The syntax itself is promtool's
// to check.
func checkPromQL(t *testing.T, where, expr string, grafana bool) map[string]bool {
	t.Helper()
	used := map[string]bool{}
	labelsInExpr := map[string]bool{}
	for _, l := range targetLabels {
		labelsInExpr[l] = true
	}
	for _, name := range promChronicle.FindAllString(expr, -1) {
		base, spec, ok := metricOf(name)
		if !ok {
			t.Errorf("%s: %s is not a metric Chronicle exports", where, name)
			continue
		}
		if spec.kind == histogram && base == name {
			t.Errorf("%s: %s is a histogram: use %s_bucket, _sum or _count", where, name, name)
		}
		used[base] = true
		for _, l := range spec.labels {
			labelsInExpr[l] = true
		}
		if spec.kind == histogram {
			labelsInExpr["le"] = true
		}
	}
	for _, m := range promSelector.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		if slices.Contains([]string{"by", "without", "on", "ignoring"}, name) {
			continue
		}
		base, spec, ok := metricOf(name)
		if !ok {
			t.Errorf("%s: selects %s, which is neither Chronicle's nor a known metric", where, name)
			continue
		}
		used[base] = true
		for _, l := range spec.labels {
			labelsInExpr[l] = true
		}
		for _, mm := range promMatcher.FindAllStringSubmatch(m[2], -1) {
			label, op, value := mm[1], mm[2], mm[3]
			if !slices.Contains(spec.labels, label) && !slices.Contains(targetLabels, label) && !(label == "le" && spec.kind == histogram) {
				t.Errorf("%s: %s has no label %s", where, name, label)
				continue
			}
			if allowed := spec.values[label]; allowed != nil && op == "=" && !slices.Contains(allowed, value) {
				t.Errorf("%s: %s{%s=%q}: %s is one of %v", where, name, label, value, label, allowed)
			}
			if grafana && op == "=" && strings.Contains(value, "$") {
				t.Errorf("%s: %s=%q: use =~ with a Grafana variable (it may hold several values)", where, label, value)
			}
		}
	}
	for _, g := range promGrouping.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !labelsInExpr[l] {
				t.Errorf("%s: groups by %s, a label none of its metrics has", where, l)
			}
		}
	}
	return used
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaDashboard struct {
	UID           string         `json:"uid"`
	Title         string         `json:"title"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	var d grafanaDashboard
	dec := json.NewDecoder(strings.NewReader(string(readFile(t, "deploy/grafana/chronicle.json"))))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("deploy/grafana/chronicle.json: %v", err)
	}
	return d
}

var grafanaVar = regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`)

// grafanaBuiltins are Grafana's own variables.
var grafanaBuiltins = map[string]bool{"__rate_interval": true, "__interval": true, "__range": true, "__interval_ms": true, "__range_s": true}

func TestGrafanaDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		t.Errorf("dashboard: uid %q, title %q, schemaVersion %d: want all set", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	if !vars["datasource"] {
		t.Error("no datasource variable: the dashboard should work with any Prometheus data source")
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	var flat []grafanaPanel
	for _, p := range d.Panels {
		flat = append(flat, p)
		flat = append(flat, p.Panels...)
	}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	var titles []string
	for _, p := range flat {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		titles = append(titles, strings.ToLower(p.Title))
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is outside the 24 columns", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at (%d,%d)", other, p.Title, x, y)
					goto next
				}
				taken[cell{x, y}] = p.Title
			}
		}
	next:
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q, query %s: empty", p.Title, q.RefID)
			}
			for _, m := range grafanaVar.FindAllStringSubmatch(q.Expr, -1) {
				if !vars[m[1]] && !grafanaBuiltins[m[1]] {
					t.Errorf("panel %q uses $%s, which is not a variable of the dashboard", p.Title, m[1])
				}
			}
			for m := range checkPromQL(t, fmt.Sprintf("panel %q", p.Title), q.Expr, true) {
				used[m] = true
			}
		}
	}
	// Every metric of the contract is on the dashboard.
	for m := range chronicleMetrics {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
	// The sections an operator looks for.
	all := strings.Join(titles, " | ")
	for _, want := range []string{"throughput", "latency", "lag", "transaction", "restore", "cache", "snapshot store", "dlq"} {
		if !strings.Contains(all, want) {
			t.Errorf("no panel title mentions %q", want)
		}
	}
}

// TestGrafanaQueriesParse has promtool parse every dashboard query, written
// as a recording rule with Grafana's variables replaced.
func TestGrafanaQueriesParse(t *testing.T) {
	tool := promtool(t)
	d := loadDashboard(t)
	repl := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
		"${aggregate_type}", ".*", "$aggregate_type", ".*", "${instance}", ".*", "$instance", ".*")
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	var flat []grafanaPanel
	for _, p := range d.Panels {
		flat = append(flat, p)
		flat = append(flat, p.Panels...)
	}
	for _, p := range flat {
		for _, q := range p.Targets {
			rules = append(rules, rule{fmt.Sprintf("dashboard:panel%d_%s", p.ID, q.RefID), repl.Replace(q.Expr)})
		}
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Fatalf("promtool does not accept the dashboard's queries: %v\n%s", err, out)
	}
}

// TestReadmeListsMetrics: deploy/README.md's metric table has the contract.
func TestReadmeListsMetrics(t *testing.T) {
	readme := string(readFile(t, "deploy/README.md"))
	for m := range chronicleMetrics {
		if !strings.Contains(readme, "`"+m+"`") {
			t.Errorf("deploy/README.md does not list `%s`", m)
		}
	}
}
