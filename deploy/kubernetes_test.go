package deploy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// decoder decodes the kinds deploy/kubernetes may hold with apimachinery's
// strict YAML serializer: the decoding the API server does for
// fieldValidation=Strict (kubectl --validate=strict). Unknown fields,
// fields in the wrong case and duplicate fields are errors.
var decoder = func() *kjson.Serializer {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Yaml: true, Strict: true})
}()

// manifests are the decoded objects of deploy/kubernetes.
type manifests struct {
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	accounts     map[string]*corev1.ServiceAccount
	pdbs         []*policyv1.PodDisruptionBudget
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// decodeStrict decodes one YAML document into its k8s.io/api type.
func decodeStrict(doc []byte) (runtime.Object, error) {
	obj, gvk, err := decoder.Decode(doc, nil, nil)
	if err != nil {
		if gvk != nil {
			return nil, fmt.Errorf("%s: %w", gvk.Kind, err)
		}
		return nil, err
	}
	return obj, nil
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "kubernetes", "*"))
	if err != nil {
		t.Fatal(err)
	}
	m := manifests{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}, accounts: map[string]*corev1.ServiceAccount{}}
	for _, f := range files {
		if ext := filepath.Ext(f); ext != ".yaml" && ext != ".yml" {
			t.Errorf("%s: deploy/kubernetes should hold only manifests (.yaml)", f)
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSeparator.Split(string(b), -1) {
			if len(bytes.TrimSpace(stripComments([]byte(doc)))) == 0 {
				continue
			}
			obj, err := decodeStrict([]byte(doc))
			if err != nil {
				t.Errorf("%s, document %d: %v", filepath.Base(f), i+1, err)
				continue
			}
			switch o := obj.(type) {
			case *appsv1.StatefulSet:
				m.statefulSets = append(m.statefulSets, o)
			case *corev1.Service:
				m.services = append(m.services, o)
			case *corev1.ConfigMap:
				m.configMaps[o.Name] = o
			case *corev1.Secret:
				m.secrets[o.Name] = o
			case *corev1.ServiceAccount:
				m.accounts[o.Name] = o
			case *policyv1.PodDisruptionBudget:
				m.pdbs = append(m.pdbs, o)
			}
		}
	}
	if len(m.statefulSets) != 1 {
		t.Fatalf("want one StatefulSet in deploy/kubernetes, got %d", len(m.statefulSets))
	}
	return m
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// TestStrictDecodingRefusesUnknownFields: the decoder the manifests go
// through does fail on a misspelt or misplaced field.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	for name, doc := range map[string]string{
		"wrong case": "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  clusterIp: None\n",
		"misplaced":  "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      containers:\n        - name: c\n          readinessProbe:\n            path: /readyz\n",
		"duplicate":  "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  A: \"1\"\n  A: \"2\"\n",
		"unknown":    "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  clusterIPs: [None]\n  headless: true\n",
		"wrong kind": "apiVersion: apps/v1\nkind: Service\nmetadata:\n  name: x\n",
	} {
		_, err := decodeStrict([]byte(doc))
		if err == nil {
			t.Errorf("%s: decoded without error", name)
		}
		t.Logf("%s: %v", name, err)
	}
}

func chronicleContainer(t *testing.T, sts *appsv1.StatefulSet) *corev1.Container {
	t.Helper()
	for i := range sts.Spec.Template.Spec.Containers {
		if c := &sts.Spec.Template.Spec.Containers[i]; c.Name == "chronicle" {
			return c
		}
	}
	t.Fatalf("StatefulSet %s has no container named chronicle", sts.Name)
	return nil
}

func adminPort(t *testing.T, c *corev1.Container) corev1.ContainerPort {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == "admin" {
			return p
		}
	}
	t.Fatal("the chronicle container has no port named admin")
	return corev1.ContainerPort{}
}

func TestKubernetesManifestsDecode(t *testing.T) {
	m := loadManifests(t)
	if len(m.services) == 0 || len(m.pdbs) == 0 || len(m.configMaps) == 0 || len(m.secrets) == 0 {
		t.Errorf("want Services, a PodDisruptionBudget, a ConfigMap and a Secret: got %d, %d, %d, %d",
			len(m.services), len(m.pdbs), len(m.configMaps), len(m.secrets))
	}
}

func TestKubernetesStatefulSet(t *testing.T) {
	m := loadManifests(t)
	sts := m.statefulSets[0]
	spec := sts.Spec.Template.Spec
	c := chronicleContainer(t, sts)

	sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("the StatefulSet's selector %v does not match its pod labels %v", sts.Spec.Selector, sts.Spec.Template.Labels)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas < 2 {
		t.Error("want at least 2 replicas")
	}
	if s := sts.Spec.UpdateStrategy.Type; s != "" && s != appsv1.RollingUpdateStatefulSetStrategyType {
		t.Errorf("updateStrategy %s, want RollingUpdate", s)
	}
	if len(sts.Spec.VolumeClaimTemplates) > 0 {
		t.Error("Chronicle keeps nothing on disk: no volumeClaimTemplates")
	}

	// The image's entrypoint runs `chronicle run`.
	if len(c.Command) > 0 {
		t.Errorf("command %v overrides the image's ENTRYPOINT [/chronicle]", c.Command)
	}
	if len(c.Args) > 0 && c.Args[0] != "run" {
		t.Errorf("args %v: want run", c.Args)
	}

	// The transactional id is the pod's name.
	var txn *corev1.EnvVar
	names := map[string]bool{}
	for i, e := range c.Env {
		if names[e.Name] {
			t.Errorf("env %s is set twice", e.Name)
		}
		names[e.Name] = true
		if e.Name == "CHRONICLE_TRANSACTIONAL_ID" {
			txn = &c.Env[i]
		}
	}
	if txn == nil || txn.ValueFrom == nil || txn.ValueFrom.FieldRef == nil || txn.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("CHRONICLE_TRANSACTIONAL_ID must come from the pod's name (fieldRef metadata.name), got %+v", txn)
	}

	// Every variable is one `chronicle run` reads; references resolve.
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "CHRONICLE_") {
			if !runtimeEnv[e.Name] {
				t.Errorf("env %s: only CHRONICLE_* variables configure chronicle", e.Name)
			}
			continue
		}
		if !knowsEnv(t, "run", e.Name) {
			t.Errorf("env %s: `chronicle run` reads no such variable (see `chronicle run --help`)", e.Name)
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			s, ok := m.secrets[ref.Name]
			if !ok {
				t.Errorf("env %s: no Secret %s in deploy/kubernetes", e.Name, ref.Name)
			} else if _, ok := s.StringData[ref.Key]; !ok {
				if _, ok := s.Data[ref.Key]; !ok {
					t.Errorf("env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
				}
			}
		}
		if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
			t.Errorf("env %s: put non-secret settings in the ConfigMap, read whole with envFrom", e.Name)
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.Prefix != "" {
			t.Errorf("envFrom with prefix %q: the keys are the variables' names", ef.Prefix)
		}
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := m.configMaps[ef.ConfigMapRef.Name]
			if !ok {
				t.Errorf("envFrom: no ConfigMap %s in deploy/kubernetes", ef.ConfigMapRef.Name)
				continue
			}
			for k := range cm.Data {
				if !knowsEnv(t, "run", k) {
					t.Errorf("ConfigMap %s: %s is not a variable `chronicle run` reads", cm.Name, k)
				}
				if names[k] {
					t.Errorf("ConfigMap %s sets %s, which the container's env overrides", cm.Name, k)
				}
				if strings.Contains(k, "PASSWORD") || k == "CHRONICLE_REDIS" {
					t.Errorf("ConfigMap %s holds %s: secrets belong in the Secret", cm.Name, k)
				}
			}
		case ef.SecretRef != nil:
			t.Errorf("envFrom a Secret: reference each secret key by name instead, so the variables are checked")
		}
	}

	// The admin port is the one CHRONICLE_ADMIN_ADDR listens on.
	port := adminPort(t, c)
	addr := ""
	for _, e := range c.Env {
		if e.Name == "CHRONICLE_ADMIN_ADDR" {
			addr = e.Value
		}
	}
	want := adminDefaultPort
	if addr != "" {
		_, ps, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("CHRONICLE_ADMIN_ADDR=%q: %v", addr, err)
		}
		want, _ = strconv.Atoi(ps)
	}
	if int(port.ContainerPort) != want {
		t.Errorf("container port admin is %d, but the admin server listens on %d", port.ContainerPort, want)
	}
	if a := sts.Spec.Template.Annotations["prometheus.io/port"]; a != "" && a != strconv.Itoa(want) {
		t.Errorf("prometheus.io/port %s, want the admin port %d", a, want)
	}

	// Probes: /livez and /readyz on the admin port, by name.
	probe := func(what string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: want an httpGet on %s", what, path)
			return
		}
		if p.HTTPGet.Path != path {
			t.Errorf("%s probe on %s, want %s", what, p.HTTPGet.Path, path)
		}
		if p.HTTPGet.Port != intstr.FromString("admin") {
			t.Errorf("%s probe on port %s, want the named port admin", what, p.HTTPGet.Port.String())
		}
	}
	probe("liveness", c.LivenessProbe, "/livez")
	probe("readiness", c.ReadinessProbe, "/readyz")
	if c.StartupProbe != nil {
		probe("startup", c.StartupProbe, "/livez")
	}

	// Non-root, read-only, no privileges; the uid the image runs as.
	psc, sc := spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext: runAsNonRoot is not true")
	}
	if psc != nil && psc.RunAsUser != nil && *psc.RunAsUser != dockerfileUID(t) {
		t.Errorf("runAsUser %d, but the image's USER is %d", *psc.RunAsUser, dockerfileUID(t))
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("container securityContext: readOnlyRootFilesystem is not true")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("container securityContext: allowPrivilegeEscalation is not false")
	}
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Error("container securityContext: capabilities do not drop ALL")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false: Chronicle does not talk to the Kubernetes API")
	}
	if sa := spec.ServiceAccountName; sa != "" && m.accounts[sa] == nil {
		t.Errorf("serviceAccountName %s: no such ServiceAccount in deploy/kubernetes", sa)
	}

	// Requests and limits; GOMEMLIMIT below the memory limit.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
		if _, ok := c.Resources.Limits[r]; !ok {
			t.Errorf("no %s limit", r)
		}
	}
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		// The Go runtime's 1800MiB is Kubernetes' 1800Mi.
		lim, err := resource.ParseQuantity(strings.TrimSuffix(e.Value, "B"))
		if err != nil {
			t.Errorf("GOMEMLIMIT=%q: %v", e.Value, err)
		} else if mem := c.Resources.Limits[corev1.ResourceMemory]; lim.Cmp(mem) >= 0 {
			t.Errorf("GOMEMLIMIT %s is not below the memory limit %s", e.Value, mem.String())
		}
	}

	// The grace period outlasts CHRONICLE_SHUTDOWN_TIMEOUT.
	shutdown := 10 * time.Second // run's default
	for _, cm := range m.configMaps {
		if v, ok := cm.Data["CHRONICLE_SHUTDOWN_TIMEOUT"]; ok {
			if shutdown, err = time.ParseDuration(v); err != nil {
				t.Errorf("CHRONICLE_SHUTDOWN_TIMEOUT=%q: %v", v, err)
			}
		}
	}
	grace := 30 * time.Second // Kubernetes' default
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	if grace <= shutdown {
		t.Errorf("terminationGracePeriodSeconds %v is not above CHRONICLE_SHUTDOWN_TIMEOUT %v: pods are killed mid-shutdown", grace, shutdown)
	}
}

func TestKubernetesServicesAndPDB(t *testing.T) {
	m := loadManifests(t)
	sts := m.statefulSets[0]
	pod := labels.Set(sts.Spec.Template.Labels)
	port := adminPort(t, chronicleContainer(t, sts))

	var headless, admin bool
	for _, s := range m.services {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(pod) {
			t.Errorf("Service %s selects %v, which does not match the pods' labels %v", s.Name, s.Spec.Selector, pod)
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort != intstr.FromString(port.Name) && p.TargetPort != intstr.FromInt32(port.ContainerPort) {
				t.Errorf("Service %s port %s targets %s, which is not the container's admin port", s.Name, p.Name, p.TargetPort.String())
			}
			admin = admin || s.Spec.ClusterIP != corev1.ClusterIPNone
		}
		if s.Name == sts.Spec.ServiceName {
			if s.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("Service %s, the StatefulSet's serviceName, is not headless (clusterIP: None)", s.Name)
			}
			if !s.Spec.PublishNotReadyAddresses {
				t.Errorf("headless Service %s: publishNotReadyAddresses is false, so pods that are not ready (restoring, stopped) are not found for scraping", s.Name)
			}
			headless = true
		}
	}
	if !headless {
		t.Errorf("no headless Service %q for the StatefulSet's serviceName", sts.Spec.ServiceName)
	}
	if !admin {
		t.Error("no (non-headless) Service for the admin port")
	}

	if len(m.pdbs) != 1 {
		t.Fatalf("want one PodDisruptionBudget, got %d", len(m.pdbs))
	}
	pdb := m.pdbs[0]
	if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) || pdb.Spec.MinAvailable != nil {
		t.Errorf("PodDisruptionBudget: want maxUnavailable 1 (and no minAvailable), got %v / %v", pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
	}
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || !sel.Matches(pod) {
		t.Errorf("PodDisruptionBudget selector %v does not match the pods (%v)", pdb.Spec.Selector, err)
	}
}
