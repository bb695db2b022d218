package cli

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
)

// chronicleModule is the module path of Chronicle itself.
const chronicleModule = "github.com/chronicle-es/chronicle"

func runVersion(_ context.Context, args []string, s *session) int {
	fs := newFlags("version", "version\n\nPrints the version of this program and, when it is not chronicle itself, of the\nChronicle module it was built with; then the VCS revision and the Go version.", s)
	if _, code, done := parseFlags(fs, args); done {
		return code
	}
	if s.version != "" {
		fmt.Fprintln(s.out, s.version)
		return 0
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintf(s.out, "%s (no build information: built without module support)\n", s.name)
		return 0
	}
	fmt.Fprintln(s.out, buildVersion(s.name, bi))
	return 0
}

// buildVersion describes a binary from its build information, e.g.
// "chronicle v0.4.0 (go1.26.0)", "chronicle (devel) 3f2a9c1d0e4b,
// 2026-05-01T12:00:00Z, modified (go1.26.0)" or, for a program built on
// the library, "accounts v1.2.0 with chronicle v0.4.0 (go1.26.0)".
func buildVersion(name string, bi *debug.BuildInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", name, bi.Main.Version)
	if bi.Main.Path != chronicleModule {
		v := "(unknown version)"
		for _, d := range bi.Deps {
			if d.Path == chronicleModule {
				v = d.Version
				if d.Replace != nil {
					v += " => " + d.Replace.Path
					if d.Replace.Version != "" {
						v += " " + d.Replace.Version
					}
				}
			}
		}
		fmt.Fprintf(&b, " with chronicle %s", v)
	}
	var vcs []string
	for _, k := range []string{"vcs.revision", "vcs.time", "vcs.modified"} {
		for _, st := range bi.Settings {
			if st.Key != k || st.Value == "" {
				continue
			}
			switch {
			case k == "vcs.modified" && st.Value == "true":
				vcs = append(vcs, "modified")
			case k == "vcs.revision":
				vcs = append(vcs, "revision "+st.Value)
			case k == "vcs.time":
				vcs = append(vcs, st.Value)
			}
		}
	}
	if len(vcs) > 0 {
		fmt.Fprintf(&b, ", %s", strings.Join(vcs, ", "))
	}
	fmt.Fprintf(&b, " (%s)", bi.GoVersion)
	return b.String()
}
