package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates/ballot"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/internal/proctest"
	"github.com/chronicle-es/chronicle/internal/syncbuf"
)

// asBinaryEnv makes the test binary act as the chronicle binary: TestMain
// then runs Main with the example domains and the counter aggregate defined
// in this test, as a user's own main would, instead of the tests. The tests
// run that binary as separate processes.
const asBinaryEnv = "CHRONICLE_CLI_TEST_AS_BINARY"

func TestMain(m *testing.M) {
	if os.Getenv(asBinaryEnv) == "1" {
		Main(order.Definition(), ballot.Definition(), counterDefinition())
	}
	// The processes the tests start act as the binary.
	os.Setenv(asBinaryEnv, "1")
	code := m.Run()
	if buildOnce.path != "" {
		os.RemoveAll(filepath.Dir(buildOnce.path))
	}
	os.Exit(code)
}

// binary returns the path of a link named chronicle to the test binary,
// made once per test run, so that the program's name is chronicle.
var buildOnce struct {
	sync.Once
	path string
	err  error
}

func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		self, err := os.Executable()
		if err != nil {
			buildOnce.err = err
			return
		}
		dir, err := os.MkdirTemp("", "chronicle-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "chronicle")
		buildOnce.err = os.Symlink(self, buildOnce.path)
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// devStack is a `chronicle dev` process.
type devStack struct {
	*proctest.Process
	brokers string
}

// syncBuffer collects output written concurrently.
type syncBuffer = syncbuf.Buffer

var kafkaLine = regexp.MustCompile(`kafka:\s+(127\.0\.0\.1:\d+)`)

// startDev runs `chronicle dev` with args and waits until it prints its
// broker address. The end of the test stops it as Ctrl-C does and expects a
// clean exit.
func startDev(t *testing.T, args ...string) *devStack {
	t.Helper()
	p := proctest.Start(t, exec.Command(binary(t), append([]string{"dev", "--admin-addr", "127.0.0.1:0"}, args...)...))
	return &devStack{Process: p, brokers: p.WaitFor(t, kafkaLine, time.Minute)[1]}
}

// stop stops dev as Ctrl-C does and expects a clean exit.
func (d *devStack) stop(t *testing.T) {
	t.Helper()
	if err := d.Stop(os.Interrupt); err != nil {
		t.Errorf("chronicle dev: %v\n%s", err, d.Output())
	}
}

// chronicle runs the binary with args and stdin, returning stdout, stderr
// and the exit code.
func chronicle(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running chronicle %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func TestHelpListsEveryCommandAndFlagWithItsEnvironmentVariable(t *testing.T) {
	out, _, code := chronicle(t, "", "--help")
	if code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	for _, sc := range subcommands() {
		if !strings.Contains(out, sc.name) {
			t.Errorf("--help does not list %q", sc.name)
		}
		_, errOut, code := chronicle(t, "", sc.name, "--help")
		if code != 0 || !strings.Contains(errOut, "Usage: chronicle "+sc.name) || (sc.name != "version" && !strings.Contains(errOut, "CHRONICLE_")) {
			t.Errorf("%s --help (exit %d):\n%s", sc.name, code, errOut)
		}
	}
	_, errOut, code := chronicle(t, "", "frobnicate")
	if code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, %s", code, errOut)
	}
}

func TestDevStartsAndTopicsCheckPasses(t *testing.T) {
	d := startDev(t, "--kafka-addr", "127.0.0.1:0", "--in-memory")
	out, errOut, code := chronicle(t, "", "topics", "orders", "--brokers", d.brokers)
	if code != 0 || !strings.Contains(out, "orders.events") {
		t.Fatalf("topics orders: exit %d\n%s%s", code, out, errOut)
	}
	_, errOut, code = chronicle(t, "", "topics", "nothing-here", "--brokers", d.brokers)
	if code == 0 || !strings.Contains(errOut, "nothing-here.commands: does not exist") || !strings.Contains(errOut, "--create") {
		t.Fatalf("topics of a missing prefix: exit %d\n%s", code, errOut)
	}
}

var adminLine = regexp.MustCompile(`admin:\s+http://(127\.0\.0\.1:\d+)/`)

// TestStatusShowsOwnersLagAndReadiness: chronicle status against a dev
// stack after commands were handled.
func TestStatusShowsOwnersLagAndReadiness(t *testing.T) {
	d := startDev(t, "--kafka-addr", "127.0.0.1:0", "--in-memory")
	m := d.WaitFor(t, adminLine, 10*time.Second) // startDev returns on the kafka line; the admin line follows it
	for i := range 3 {
		if out, errOut, code := chronicle(t, "", "send", "--brokers", d.brokers, "--wait", "orders", fmt.Sprintf("o-%d", i), "CreateOrder", `{"user_id":"u-1"}`); code != 0 {
			t.Fatalf("send: exit %d\n%s%s", code, out, errOut)
		}
	}
	out, errOut, code := chronicle(t, "", "status", "--brokers", d.brokers, "--admin", m[1], "orders")
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"orders: group chronicle-dev", "PARTITION", "5          chronicle-dev", m[1] + ": ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] >= "0" && f[0] <= "5" && len(f[0]) == 1 && f[3] != "0" {
			t.Errorf("partition %s has lag %s after every command was answered:\n%s", f[0], f[3], out)
		}
	}
}
