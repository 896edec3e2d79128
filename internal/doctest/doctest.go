// Package doctest makes sluice's documentation executable: it reads the
// shell examples out of README.md, docs/*.md and sluicectl's --help, and
// compares what each command prints with what the document says it prints.
// The tests in this package run them against a real sandbox daemon.
//
// # What is run
//
// A fenced block tagged console is a transcript: a line starting with "$ "
// is a command (a line ending in a backslash continues on the next line),
// and the lines after it, up to the next command, are its expected output:
// stdout and stderr together, in the order the program wrote them, as a
// terminal shows them.
//
// A fenced block tagged sh that calls sluicectl or curl --unix-socket is run
// too, one command per line (comment lines skipped). It shows no output, so
// each command must succeed: exit status 0, something on stdout, no
// "sluicectl:" error, no sluice problem document and no iNeo failure
// envelope ("ok":false). A trailing
// "# → TEXT" comment is expected output and is compared by the rule below.
//
// Every block of one file runs in one shell, in document order, so
// variables set by one command (S=...) are seen by the next, and "echo $?"
// prints the previous command's status.
//
// An HTML comment right before a block changes how it runs:
//
//	<!-- doctest: skip REASON -->  not run (the reason is required)
//	<!-- doctest: input TEXT -->   TEXT and a newline are the command's stdin;
//	                                 the transcript shows TEXT where the
//	                                 terminal echoed it after the prompt
//
// # How output is compared
//
// Both sides are normalised, then compared line by line:
//
//   - runs of spaces count as one space (tables align to their widest cell,
//     which differs with pids and paths);
//   - volatile values are replaced by a placeholder on both sides: clock
//     times (2026-11-27 22:40:56 and RFC 3339 forms), the status uptime,
//     ports of 127.0.0.1, link tokens and signatures (token=, Expires=,
//     Signature=), a cached answer's ttl=
//     and Age, request ids, plugin pids in the status table, and the
//     socket and config paths in status;
//   - in an expected line, "…" or "..." matches any text within the line,
//     and a line that is only "…" or "..." matches any number of lines.
//
// Everything else is literal: a changed message, count, name or order fails.
package doctest

import (
	"bufio"
	"fmt"
	"regexp"
	"strings"
)

// Command is one command of a document and what the document says about
// its output.
type Command struct {
	Line string // the command, continuation lines joined with "\n"
	// Output is the expected output, or nil when the document shows none
	// (the command must then merely succeed).
	Output []string
	Input  string // stdin, from <!-- doctest: input -->
	Src    string // file:line, for messages
}

// Block is one fenced block of a document.
type Block struct {
	Lang     string
	Src      string
	Skip     string // reason, from <!-- doctest: skip -->
	Commands []Command
}

var annotation = regexp.MustCompile(`^<!--\s*doctest:\s*(\w+)\s*(.*?)\s*-->$`)

// Parse returns the executable blocks of a Markdown document: console
// blocks, and sh blocks that talk to sluice. name prefixes positions.
func Parse(name, markdown string) ([]Block, error) {
	var out []Block
	lines := strings.Split(markdown, "\n")
	var skip, input string
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimSpace(lines[i])
		if m := annotation.FindStringSubmatch(trimmed); m != nil {
			switch m[1] {
			case "skip":
				if m[2] == "" {
					return nil, fmt.Errorf("%s:%d: doctest: skip needs a reason", name, i+1)
				}
				skip = m[2]
			case "input":
				input = m[2]
			default:
				return nil, fmt.Errorf("%s:%d: unknown doctest annotation %q", name, i+1, m[1])
			}
			continue
		}
		if !strings.HasPrefix(trimmed, "```") {
			if trimmed != "" {
				skip, input = "", ""
			}
			continue
		}
		indent := lines[i][:strings.Index(lines[i], "```")]
		lang := strings.TrimPrefix(trimmed, "```")
		start := i + 1
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, strings.TrimPrefix(lines[i], indent))
		}
		b := Block{Lang: lang, Src: fmt.Sprintf("%s:%d", name, start), Skip: skip}
		switch lang {
		case "console":
			b.Commands = parseConsole(name, start, body, input)
		case "sh", "bash", "shell":
			b.Commands = parseSh(name, start, body)
		}
		if len(b.Commands) > 0 {
			out = append(out, b)
		}
		skip, input = "", ""
	}
	return out, nil
}

func parseConsole(name string, start int, body []string, input string) []Command {
	var cmds []Command
	for j := 0; j < len(body); j++ {
		l := body[j]
		if !strings.HasPrefix(l, "$ ") {
			if len(cmds) > 0 {
				c := &cmds[len(cmds)-1]
				c.Output = append(c.Output, l)
			}
			continue
		}
		c := Command{Line: strings.TrimPrefix(l, "$ "), Output: []string{}, Src: fmt.Sprintf("%s:%d", name, start+j+1)}
		for strings.HasSuffix(c.Line, `\`) && j+1 < len(body) {
			j++
			c.Line += "\n" + body[j]
		}
		if input != "" {
			c.Input = input
		}
		cmds = append(cmds, c)
	}
	return cmds
}

// talksToSluice says whether an sh line is an example of sluice's use
// rather than a build or install step.
var talksToSluice = regexp.MustCompile(`^(bin/)?sluicectl\b|^curl\b.*--unix-socket|^S=`)

func parseSh(name string, start int, body []string) []Command {
	var cmds []Command
	runnable := false
	for j := 0; j < len(body); j++ {
		l := strings.TrimSpace(body[j])
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		c := Command{Line: l, Src: fmt.Sprintf("%s:%d", name, start+j+1)}
		for strings.HasSuffix(c.Line, `\`) && j+1 < len(body) {
			j++
			c.Line += "\n" + body[j]
		}
		if talksToSluice.MatchString(l) {
			runnable = runnable || !strings.HasPrefix(l, "S=")
		}
		if _, after, ok := strings.Cut(c.Line, "# → "); ok {
			c.Output = []string{strings.TrimSpace(after)}
		}
		cmds = append(cmds, c)
	}
	if !runnable {
		return nil
	}
	for _, c := range cmds {
		if !talksToSluice.MatchString(c.Line) {
			// A block mixing sluice examples with other steps would run
			// those steps too; none of the documents does that.
			return []Command{{Line: c.Line, Src: c.Src, Output: []string{"doctest: an sh block that calls sluice may hold only sluicectl and curl --unix-socket commands"}}}
		}
	}
	return cmds
}

// volatile lists what differs from run to run, and why, as regular
// expressions and the placeholder each match becomes on both sides.
var volatile = []struct {
	re   *regexp.Regexp
	repl string
}{
	// Clocks.
	{regexp.MustCompile(`\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?`), "<time>"},
	{regexp.MustCompile(`^uptime \S+`), "uptime <d>"},
	{regexp.MustCompile(`(?i)\bage: \d+`), "Age: <n>"},
	{regexp.MustCompile(`ttl=\d+`), "ttl=<n>"},
	// The simulators listen on ephemeral ports.
	{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:<port>"},
	// Links carry per-link tokens and signatures.
	{regexp.MustCompile(`token=[0-9a-fA-F]+`), "token=<token>"},
	{regexp.MustCompile(`(Expires|Signature|sign|timestamp)=[^&\s"]+`), "$1=<v>"},
	{regexp.MustCompile(`(?i)(sluice-request-id: |"request_id": ?"|"random_hash": ?")[0-9a-f]+`), "${1}<id>"},
	{regexp.MustCompile(`"(hash|started_at|loaded_at)": ?"[^"]*"`), `"$1": "<v>"`},
	// Plugin pids, and where this daemon's socket and config are.
	{regexp.MustCompile(`^(\w+ (?:starting|ready|restarting|failed|stopped|disabled)) \d+ `), "$1 <pid> "},
	{regexp.MustCompile(`^(socket|config) \S+`), "$1 <path>"},
}

var spaces = regexp.MustCompile(` +`)

// Normalise applies the comparison rule's rewriting to one line.
func Normalise(line string) string {
	line = spaces.ReplaceAllString(strings.TrimRight(line, " \t\r"), " ")
	for _, v := range volatile {
		line = v.re.ReplaceAllString(line, v.repl)
	}
	return line
}

func isElision(l string) bool {
	l = strings.TrimSpace(l)
	return l == "…" || l == "..."
}

// Match compares a command's actual output with the expected lines by the
// package's rule and returns a description of the first difference.
func Match(expected []string, actual string) error {
	var re strings.Builder
	re.WriteString(`^`)
	for _, e := range expected {
		if isElision(e) {
			re.WriteString(`(?:[^\n]*\n)*?`)
			continue
		}
		e = Normalise(e)
		parts := regexp.MustCompile(`…|\.\.\.`).Split(e, -1)
		for i, p := range parts {
			if i > 0 {
				re.WriteString(`[^\n]*`)
			}
			re.WriteString(regexp.QuoteMeta(p))
		}
		re.WriteString(`\n`)
	}
	re.WriteString(`$`)
	got := normaliseText(actual)
	if regexp.MustCompile(re.String()).MatchString(got) {
		return nil
	}
	return fmt.Errorf("output differs from the document\n--- document (normalised):\n%s--- actual (normalised):\n%s%s",
		normaliseText(strings.Join(expected, "\n")), got, firstDiff(expected, got))
}

func normaliseText(s string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		b.WriteString(Normalise(sc.Text()))
		b.WriteByte('\n')
	}
	return b.String()
}

// firstDiff names the first expected line that has no match in order, a
// hint for the reader of a failure.
func firstDiff(expected []string, got string) string {
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	k := 0
	for _, e := range expected {
		if isElision(e) {
			continue
		}
		parts := regexp.MustCompile(`…|\.\.\.`).Split(Normalise(e), -1)
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		lre := regexp.MustCompile(`^` + strings.Join(parts, `.*`) + `$`)
		found := false
		for ; k < len(lines); k++ {
			if lre.MatchString(lines[k]) {
				found, k = true, k+1
				break
			}
		}
		if !found {
			return fmt.Sprintf("--- first document line not found in order: %q\n", e)
		}
	}
	return "--- every document line appears, but with extra or missing lines between them\n"
}

// EchoInput reconstructs a terminal's echo of typed input: the expected
// line that ends in input shows the prompt then what the user typed, so
// input and a newline go after the first occurrence of that prompt in the
// actual output.
func EchoInput(expected []string, input, actual string) string {
	for _, e := range expected {
		if prompt, ok := strings.CutSuffix(e, input); ok && prompt != "" {
			if i := strings.Index(actual, prompt); i >= 0 {
				i += len(prompt)
				return actual[:i] + input + "\n" + actual[i:]
			}
		}
	}
	return actual
}
