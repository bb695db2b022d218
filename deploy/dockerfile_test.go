package deploy

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// dockerfile is the Dockerfile as instructions (continuations joined,
// comments dropped), split into stages.
type dockerfile struct {
	args   map[string]string // global ARGs before the first FROM, with defaults
	stages []stage
}

type stage struct {
	from, name string
	lines      []instruction
}

type instruction struct{ cmd, rest string }

func parseDockerfile(t *testing.T, src string) dockerfile {
	t.Helper()
	d := dockerfile{args: map[string]string{}}
	var joined []string
	cur := ""
	for _, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		joined = append(joined, cur+trimmed)
		cur = ""
	}
	for _, l := range joined {
		if l == "" {
			continue
		}
		cmd, rest, _ := strings.Cut(l, " ")
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(rest)}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.rest)
			var s stage
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					s.name = f[i+1]
					i++
				default:
					s.from = f[i]
				}
			}
			d.stages = append(d.stages, s)
		case len(d.stages) == 0 && in.cmd == "ARG":
			k, v, _ := strings.Cut(in.rest, "=")
			d.args[k] = v
		case len(d.stages) == 0:
			t.Fatalf("Dockerfile: %s before the first FROM", in.cmd)
		default:
			s := &d.stages[len(d.stages)-1]
			s.lines = append(s.lines, in)
		}
	}
	return d
}

func (s stage) all(cmd string) []string {
	var out []string
	for _, l := range s.lines {
		if l.cmd == cmd {
			out = append(out, l.rest)
		}
	}
	return out
}

func (s stage) last(cmd string) string {
	all := s.all(cmd)
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1]
}

func jsonArray(t *testing.T, what, s string) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("Dockerfile %s %s: not the exec (JSON array) form: %v", what, s, err)
	}
	return out
}

// goVersion returns the major.minor of a Go version ("1.26.0" -> 1, 26).
func goVersion(t *testing.T, v string) (int, int) {
	t.Helper()
	m := regexp.MustCompile(`^(\d+)\.(\d+)`).FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("not a Go version: %q", v)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major, minor
}

func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t, string(readFile(t, "Dockerfile")))
	if len(d.stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stage(s)", len(d.stages))
	}
	build, final := d.stages[0], d.stages[len(d.stages)-1]

	// The build stage's Go is at least go.mod's.
	gomod := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(string(readFile(t, "go.mod")))
	if gomod == nil {
		t.Fatal("go.mod has no go line")
	}
	image := build.from
	if v, ok := d.args["GO_VERSION"]; ok {
		image = strings.ReplaceAll(image, "${GO_VERSION}", v)
	}
	m := regexp.MustCompile(`^golang:(\d+\.\d+(?:\.\d+)?)`).FindStringSubmatch(image)
	if m == nil {
		t.Fatalf("build stage FROM %s: want an official golang image with a version tag", build.from)
	}
	imgMaj, imgMin := goVersion(t, m[1])
	modMaj, modMin := goVersion(t, gomod[1])
	if imgMaj < modMaj || (imgMaj == modMaj && imgMin < modMin) {
		t.Errorf("the build stage uses Go %s but go.mod needs %s", m[1], gomod[1])
	}

	// The build: static, trimmed, of ./cmd/chronicle, to the file the final
	// stage copies.
	var goBuild string
	for _, r := range build.all("RUN") {
		if strings.Contains(r, "go build") {
			goBuild = r
		}
	}
	if goBuild == "" {
		t.Fatal("no RUN go build in the build stage")
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/chronicle", "-o /out/chronicle"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("the go build step lacks %q: %s", want, goBuild)
		}
	}
	copied := false
	for _, c := range final.all("COPY") {
		if strings.Contains(c, "--from="+build.name) && strings.Contains(c, "/out/chronicle /chronicle") {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the final stage does not COPY --from=%s /out/chronicle /chronicle", build.name)
	}

	// A minimal base with CA certificates, a non-root user.
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %s: want distroless/static (CA certificates, no shell)", final.from)
	}
	user := final.last("USER")
	uid, _, _ := strings.Cut(user, ":")
	if user == "" || uid == "root" || uid == "0" {
		t.Errorf("final stage USER %q: want a non-root user", user)
	}
	if _, err := strconv.Atoi(uid); err != nil {
		t.Errorf("USER %q: use a numeric uid, so that Kubernetes' runAsNonRoot can verify it", user)
	}

	// ENTRYPOINT ["/chronicle"], CMD ["run"], and `chronicle run` exists.
	if ep := jsonArray(t, "ENTRYPOINT", final.last("ENTRYPOINT")); len(ep) != 1 || ep[0] != "/chronicle" {
		t.Errorf("ENTRYPOINT %v, want [/chronicle]", ep)
	}
	cmd := jsonArray(t, "CMD", final.last("CMD"))
	if len(cmd) != 1 || cmd[0] != "run" {
		t.Errorf("CMD %v, want [run]", cmd)
	}
	if out, err := exec.Command(imageBinary(t), append(cmd, "--help")...).CombinedOutput(); err != nil {
		t.Errorf("chronicle %v --help: %v\n%s", cmd, err, out)
	}
	if e := final.last("EXPOSE"); e != strconv.Itoa(adminDefaultPort) {
		t.Errorf("EXPOSE %q, want the admin port %d", e, adminDefaultPort)
	}
}

// dockerfileUID is the numeric uid the image runs as.
func dockerfileUID(t *testing.T) int64 {
	t.Helper()
	d := parseDockerfile(t, string(readFile(t, "Dockerfile")))
	uid, _, _ := strings.Cut(d.stages[len(d.stages)-1].last("USER"), ":")
	n, err := strconv.ParseInt(uid, 10, 64)
	if err != nil {
		t.Fatalf("Dockerfile USER: %v", err)
	}
	return n
}
