package doctest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/core/api/client"
	"github.com/sluice-dev/sluice/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// sandbox is one `sluiced --sandbox` with a fresh state dir, as a reader
// who follows the README has, plus a working directory where bin/ holds
// the test binaries (the README says bin/sluicectl, docs/ say sluicectl).
type sandbox struct {
	socket, work, bin, curlHome string
}

func startSandbox(t *testing.T) *sandbox {
	t.Helper()
	bin := testenv.BinDir(t)
	dir, err := os.MkdirTemp("", "sl-doc-") // short: the socket must fit in sun_path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sb := &sandbox{socket: filepath.Join(dir, "s.sock"), work: filepath.Join(dir, "work"), bin: bin}
	if err := os.MkdirAll(sb.work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(sb.work, "bin")); err != nil {
		t.Fatal(err)
	}
	sb.curlHome = filepath.Join(dir, "curl")
	if err := os.MkdirAll(sb.curlHome, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sb.curlHome, ".curlrc"), []byte("silent\nshow-error\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The repository's config.toml, as `make run` uses.
	root := repoRoot(t)
	log, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "sluiced"), "--sandbox", "--reset",
		"--config", filepath.Join(root, "config.toml"), "--socket", sb.socket, "--state-dir", filepath.Join(dir, "state"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		<-exited
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("daemon log:\n%s", tail(string(b), 30))
		}
	})
	// Stop waiting as soon as the daemon exits (a config it refuses, say).
	ctx, cancel := context.WithCancel(testenv.Ctx(t, time.Minute))
	defer cancel()
	go func() {
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := client.New(sb.socket).WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	return sb
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// result is what one command did.
type result struct {
	out string // stdout and stderr as written, interleaved
	rc  int
}

// run executes cmds in one bash, in order, so shell state carries from one
// to the next as in a reader's terminal; each command's output goes to its
// own file and $? is the previous command's status.
func (sb *sandbox) run(ctx context.Context, t *testing.T, cmds []Command) []result {
	t.Helper()
	dir := t.TempDir()
	var script strings.Builder
	script.WriteString("__rc=0\n")
	for i, c := range cmds {
		in := "/dev/null"
		if c.Input != "" {
			in = filepath.Join(dir, fmt.Sprintf("in.%d", i))
			if err := os.WriteFile(in, []byte(c.Input+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(&script, "(exit $__rc); {\n%s\n} >%s 2>&1 <%s; __rc=$?; echo $__rc >%s\n",
			c.Line, filepath.Join(dir, fmt.Sprintf("out.%d", i)), in, filepath.Join(dir, fmt.Sprintf("rc.%d", i)))
	}
	// A command that never ends (a watch without --once) fails the block
	// instead of the whole suite's timeout.
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	sh := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", script.String())
	sh.Dir = sb.work
	sh.Env = append(os.Environ(),
		"SLUICE_SOCKET="+sb.socket,
		"PATH="+sb.bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"SLUICE_CONFIG=", "NO_COLOR=1", "COLUMNS=200",
		// curl prints no progress meter to a terminal; its output here
		// goes to a file, so say what a terminal would get.
		"CURL_HOME="+sb.curlHome)
	var stderr bytes.Buffer
	sh.Stderr = &stderr
	if err := sh.Run(); err != nil {
		t.Fatalf("running the examples: %v\n%s", err, stderr.String())
	}
	res := make([]result, len(cmds))
	for i := range cmds {
		out, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("out.%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		rc, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("rc.%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		res[i].out = string(out)
		res[i].rc, _ = strconv.Atoi(strings.TrimSpace(string(rc)))
	}
	return res
}

// assignment is a command that only sets a shell variable (S=...).
var assignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=\S*$`)

// problemDoc is an error answer: sluice's problem document, sluicectl's
// error line, or iNeo's failure envelope (which arrives with HTTP 200).
var problemDoc = regexp.MustCompile(`urn:sluice:problem:|(?m)^sluicectl: |"ok": ?false`)

// check applies the documented rule to one command's result.
func check(c Command, r result) error {
	if c.Output == nil {
		switch {
		case r.rc != 0:
			return fmt.Errorf("exit status %d, want 0 (the document shows no failure)\n%s", r.rc, r.out)
		case strings.TrimSpace(r.out) == "" && !assignment.MatchString(c.Line):
			return fmt.Errorf("printed nothing")
		case problemDoc.MatchString(r.out):
			return fmt.Errorf("answered with an error the document does not show:\n%s", r.out)
		}
		return nil
	}
	out := r.out
	if c.Input != "" {
		out = EchoInput(c.Output, c.Input, out)
	}
	return Match(c.Output, out)
}

// documents are the pages whose examples must run: the README and every
// page of docs/ (RELIABILITY.md's examples included).
func documents(t *testing.T) []string {
	root := repoRoot(t)
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{filepath.Join(root, "README.md")}, docs...)
}

// TestDocumentedCommands runs every example of the README, of docs/ and of
// sluicectl's --help against one sandbox daemon, and compares each shown
// output by the package's rule. One daemon for all: the examples share the
// sandbox's rate budget and cache as a reader's would, and the suite stays
// within iNeo's 6 requests per 7 s because the scheduler spaces them.
func TestDocumentedCommands(t *testing.T) {
	sb := startSandbox(t)
	ctx := testenv.Ctx(t, 8*time.Minute)
	root := repoRoot(t)
	for _, path := range documents(t) {
		rel, _ := filepath.Rel(root, path)
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blocks, err := Parse(rel, string(text))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(rel, func(t *testing.T) {
			var cmds []Command
			for _, b := range blocks {
				if b.Skip != "" {
					t.Logf("%s: skipped: %s", b.Src, b.Skip)
					continue
				}
				cmds = append(cmds, b.Commands...)
			}
			if len(cmds) == 0 {
				return
			}
			for i, r := range sb.run(ctx, t, cmds) {
				if err := check(cmds[i], r); err != nil {
					t.Errorf("%s: $ %s\n%v", cmds[i].Src, cmds[i].Line, err)
				}
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		cmds := helpExamples(ctx, t, sb)
		if len(cmds) < 10 {
			t.Fatalf("found %d Example lines in sluicectl's help; the walk is broken", len(cmds))
		}
		for i, r := range sb.run(ctx, t, cmds) {
			if err := check(cmds[i], r); err != nil {
				t.Errorf("%s: $ %s\n%v", cmds[i].Src, cmds[i].Line, err)
			}
		}
	})
}

// helpInput answers the prompts of help examples that ask before acting,
// as the reader who runs them would.
var helpInput = map[string]string{
	// "This spends money. Buy? [y/N]": sandbox purchases are simulated.
	"sluicectl hellorf purchase ": "y",
}

// helpExamples walks sluicectl's command tree through --help, as a user
// reads it, and returns every line of every Examples: section.
func helpExamples(ctx context.Context, t *testing.T, sb *sandbox) []Command {
	t.Helper()
	var out []Command
	var walk func(path []string)
	walk = func(path []string) {
		args := append(append([]string{}, path...), "--help")
		cmd := exec.CommandContext(ctx, filepath.Join(sb.bin, "sluicectl"), args...)
		cmd.Env = append(os.Environ(), "SLUICE_SOCKET="+sb.socket, "COLUMNS=200")
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("sluicectl %s: %v", strings.Join(args, " "), err)
		}
		ex, subs := parseHelp(string(b))
		for _, e := range ex {
			c := Command{Line: e, Src: "sluicectl " + strings.Join(args, " ")}
			for prefix, in := range helpInput {
				if strings.HasPrefix(e, prefix) {
					c.Input = in
				}
			}
			out = append(out, c)
		}
		for _, s := range subs {
			if s == "help" {
				continue
			}
			walk(append(append([]string{}, path...), s))
		}
	}
	walk(nil)
	return out
}

// parseHelp reads cobra's help: the lines of Examples: and the names under
// Available Commands: (and any other "... Commands:" group).
func parseHelp(help string) (examples, subcommands []string) {
	section := ""
	for _, l := range strings.Split(help, "\n") {
		if l != "" && !strings.HasPrefix(l, " ") && strings.HasSuffix(l, ":") {
			section = l
			continue
		}
		if strings.TrimSpace(l) == "" {
			if section != "Examples:" {
				section = ""
			}
			continue
		}
		switch {
		case section == "Examples:":
			e := strings.TrimSpace(l)
			if !strings.HasPrefix(e, "#") {
				examples = append(examples, e)
			}
		case strings.HasSuffix(section, "Commands:"):
			subcommands = append(subcommands, strings.Fields(l)[0])
		}
	}
	return examples, subcommands
}
