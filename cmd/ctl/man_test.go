package main

import (
	"bytes"
	"context"
	"github.com/sluice-dev/sluice/internal/manref"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func runPlain(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, stdio{in: strings.NewReader(""), out: &out, err: &errb},
		func(k string) string { return env[k] })
	return result{code, out.String(), errb.String()}
}

func TestCompletion(t *testing.T) {
	r := runPlain(t, nil, "completion", "bash")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("completion bash: %+v", r.code)
	}
	for _, want := range []string{"# bash completion V2 for sluicectl", "__start_sluicectl()", "complete -o default -F __start_sluicectl sluicectl"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("bash completion script lacks %q", want)
		}
	}
	if bash, err := exec.LookPath("bash"); err == nil {
		cmd := exec.Command(bash, "-n")
		cmd.Stdin = strings.NewReader(r.stdout)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("bash -n rejects the script: %v\n%s", err, out)
		}
	}

	for shell, want := range map[string]string{
		"zsh":        "#compdef sluicectl",
		"fish":       "complete -c sluicectl",
		"powershell": "Register-ArgumentCompleter",
	} {
		if r := runPlain(t, nil, "completion", shell); r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("completion %s: code %d, lacks %q", shell, r.code, want)
		}
	}

	if r := runPlain(t, nil, "completion", "tcsh"); r.code != exitCaller || !strings.Contains(r.stderr, `invalid argument "tcsh"`) {
		t.Errorf("completion tcsh: %+v", r)
	}
	if r := runPlain(t, nil, "completion"); r.code != exitCaller {
		t.Errorf("completion without a shell: %+v", r)
	}
	// The scripts call back into sluicectl for the candidates.
	if r := runPlain(t, nil, "__complete", "wat"); r.code != 0 || !strings.HasPrefix(r.stdout, "watch\t") {
		t.Errorf("__complete wat: %+v", r)
	}
}

// roffRequests are the requests the generator emits; any other line starting
// with "." (or any starting with "'") would be text roff misreads.
var roffRequest = regexp.MustCompile(`^\.(TH|SH|PP|TP|RS|RE|nf|fi|nh|ad|br|B|BR)( |$)`)

// unescapedHyphen finds a "-" not written as \- (see manref.RoffEscape).
var unescapedHyphen = regexp.MustCompile(`(^|[^\\])-`)

func TestGenMan(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man", "man1")
	r := runPlain(t, map[string]string{"SOURCE_DATE_EPOCH": "1795000000"}, "gen-man", dir)
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("gen-man: %+v", r)
	}
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("page missing: %v", err)
		}
		return string(b)
	}

	root := read("sluicectl.1")
	status := read("sluicectl-status.1")
	track := read("sluicectl-ineo-track.1")
	watch := read("sluicectl-watch.1")
	for _, c := range []struct {
		page  string
		wants []string
	}{
		{root, []string{
			`.TH "SLUICECTL" 1 "2026\-11\-18" "sluicectl `,
			".SH NAME\nsluicectl \\- Command\\-line client of sluiced\n",
			".SH SYNOPSIS\n\\fBsluicectl\\fR [flags]\n.br\n\\fBsluicectl\\fR \\fICOMMAND\\fR\n",
			`\fB\-\-socket\fR \fIstring\fR`, `\fB\-\-timeout\fR \fIduration\fR`, `\fB\-\-json\fR`, `\fB\-h\fR, \fB\-\-help\fR`,
			"(default: 1m0s)", "(default: /run/sluice/sluice.sock for root, else $XDG_RUNTIME_DIR/sluice/sluice.sock)",
			".SH EXIT STATUS\n.TP\n.B 0\nsuccess\n",
			".TP\n.B 4\nsluiced unreachable",
			".BR sluicectl\\-status (1),\n", ".BR sluicectl\\-watch (1)",
		}},
		{status, []string{
			`.TH "SLUICECTL\-STATUS" 1`,
			".SH DESCRIPTION\n.PP\nShow the daemon's version",
			".SH GLOBAL OPTIONS\n", `\fB\-\-socket\fR`,
			".SH EXIT STATUS\nSee EXIT STATUS in\n.BR sluicectl (1).\n",
			".SH SEE ALSO\n.BR sluicectl (1)\n",
		}},
		{track, []string{`.TH "SLUICECTL\-INEO\-TRACK" 1`, `\fBsluicectl ineo track\fR`, ".BR sluicectl\\-ineo (1)\n"}},
		{watch, []string{
			`\fB\-\-interval\fR \fIduration\fR`, "time between refreshes (default: 1s)", `\fB\-\-once\fR`,
			// The example line is kept as laid out.
			".RS 4\n.nf\n2026\\-11\\-27T22:00:00Z ineo.spotify 3/6 q=0 | ",
		}},
	} {
		for _, want := range c.wants {
			if !strings.Contains(c.page, want) {
				t.Errorf("page lacks %q:\n%s", want, c.page)
			}
		}
	}
	if strings.Contains(root, "Exit status:") {
		t.Error("the exit status table stayed in the root page's DESCRIPTION")
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.Contains(name, "gen-man") || strings.Contains(name, "help") || strings.Contains(name, "__") {
			t.Errorf("%s: hidden and help commands get no page", name)
		}
		page := read(name)
		if !strings.HasPrefix(page, ".TH ") {
			t.Errorf("%s does not start with .TH", name)
		}
		for i, line := range strings.Split(strings.TrimSuffix(page, "\n"), "\n") {
			switch {
			case strings.HasPrefix(line, "'"),
				strings.HasPrefix(line, ".") && !roffRequest.MatchString(line):
				t.Errorf("%s:%d: unescaped control character: %q", name, i+1, line)
			case unescapedHyphen.MatchString(line):
				t.Errorf("%s:%d: bare hyphen: %q", name, i+1, line)
			}
		}
	}
	for _, want := range []string{"sluicectl-cache-purge.1", "sluicectl-completion.1", "sluicectl-ineo-tg-login.1"} {
		read(want)
	}
}

func TestGenManBadEpoch(t *testing.T) {
	r := runPlain(t, map[string]string{"SOURCE_DATE_EPOCH": "yesterday"}, "gen-man", t.TempDir())
	if r.code != exitCaller || !strings.Contains(r.stderr, "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: %+v", r)
	}
}

func TestManDate(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		epoch string
		want  time.Time
		err   bool
	}{
		{"", now, false},
		{"0", time.Unix(0, 0).UTC(), false},
		{"1795000000", time.Unix(1795000000, 0).UTC(), false},
		{"1.5", time.Time{}, true},
		{"soon", time.Time{}, true},
	} {
		got, err := manDate(tc.epoch, now)
		if (err != nil) != tc.err || !got.Equal(tc.want) {
			t.Errorf("manDate(%q) = %v, %v", tc.epoch, got, err)
		}
	}
}

func TestRoffLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{".starts with a dot", `\&.starts with a dot`},
		{"'starts with an apostrophe", `\&'starts with an apostrophe`},
		{"mid.dle and it's", "mid.dle and it's"},
		{`C:\path`, `C:\epath`},
		{`\fB not a font change`, `\efB not a font change`},
		{"--flag -s a-b", `\-\-flag \-s a\-b`},
		{`.\`, `\&.\e`},
	} {
		if got := manref.RoffLine(tc.in); got != tc.want {
			t.Errorf("roffLine(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRoffText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"One line.", ".PP\nOne line.\n"},
		{"First\nparagraph.\n\n\nSecond.", ".PP\nFirst\nparagraph.\n.PP\nSecond.\n"},
		{
			"Intro:\n\n  $ cmd --x\n    .dot\n\n  after blank\nOutro.",
			".PP\nIntro:\n.PP\n.RS 4\n.nf\n$ cmd \\-\\-x\n  .dot\n\nafter blank\n.fi\n.RE\n.PP\nOutro.\n",
		},
		{"\n\n  indented first\n", ".PP\n.RS 4\n.nf\nindented first\n.fi\n.RE\n"},
		{".hidden request", ".PP\n\\&.hidden request\n"},
	} {
		if got := roffText(tc.in); got != tc.want {
			t.Errorf("roffText(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestRoffExitStatus(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{
			"  0  success\n  2  caller error: bad\n     usage\n",
			".TP\n.B 0\nsuccess\n.TP\n.B 2\ncaller error: bad\nusage\n",
		},
		// Not a table: rendered as text.
		{"Zero on success.", ".PP\nZero on success.\n"},
	} {
		if got := roffExitStatus(tc.in); got != tc.want {
			t.Errorf("roffExitStatus(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

// TestCompletionFromDaemon: flag values the daemon knows are completed from
// it, through the same __complete entry point the shell scripts call.
func TestCompletionFromDaemon(t *testing.T) {
	d := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/status":
			writeJSON(w, 200, map[string]any{"version": "x", "providers": []map[string]any{
				{"name": "ineo", "state": "ready"}, {"name": "hellorf", "state": "ready"}}})
		case "/v1/hellorf/audio/categories":
			hellorfOK(w, testCategories)
		}
	})
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"cache", "purge", ""}, []string{"ineo\tready", "hellorf\tready"}},
		{[]string{"hellorf", "search", "--mood", ""}, []string{"cheerful\t1370 欢快 (cheerful)", "sad\t1371 悲伤 (sad)"}},
		{[]string{"hellorf", "search", "--genre", "e"}, []string{"electronic\t1358 电子 (electronic)"}},
		{[]string{"spotify", "search", "--type", ""}, []string{"artist", "album"}},
	} {
		r := runPlain(t, nil, append([]string{"__complete", "--socket", d.socket}, tc.args...)...)
		for _, w := range tc.want {
			if !strings.Contains(r.stdout, w+"\n") {
				t.Errorf("%v: lacks %q:\n%s", tc.args, w, r.stdout)
			}
		}
	}
	// No daemon: nothing offered, and quickly.
	r := runPlain(t, nil, "__complete", "--socket", "/nonexistent/s.sock", "cache", "purge", "")
	if r.code != 0 || strings.Contains(r.stdout, "ineo") {
		t.Errorf("no daemon: %+v", r)
	}
	if r := runPlain(t, nil, "completion", "--help"); !strings.Contains(r.stdout, "bash-completion package") {
		t.Errorf("completion help does not say what bash needs: %s", r.stdout)
	}
}

// TestGenManRef: the hidden gen-man-ref writes sluiced(8) and
// sluice.toml(5) (from config.toml) where make man and make install look.
func TestGenManRef(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man")
	r := runPlain(t, map[string]string{"SOURCE_DATE_EPOCH": "1795000000"}, "gen-man-ref", "../../config.toml", dir)
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("gen-man-ref: %+v", r)
	}
	for name, want := range map[string]string{
		"man8/sluiced.8":     `.TH "SLUICED" 8 "2026\-11\-18"`,
		"man5/sluice.toml.5": `.TH "SLUICE.TOML" 5 "2026\-11\-18"`,
	} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !strings.HasPrefix(string(b), want) {
			t.Errorf("%s: %v\n%.200s", name, err, b)
		}
	}
	if r := runPlain(t, nil, "gen-man-ref", "no-such.toml", dir); r.code == 0 || !strings.Contains(r.stderr, "config reference") {
		t.Errorf("missing config reference: %+v", r)
	}
}
