package manref

import (
	"flag"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/sluice-dev/sluice/core/config"
	"github.com/sluice-dev/sluice/internal/daemonflags"
)

var header = Header{Date: time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), Version: "1.2.3"}

func reference(t *testing.T) (*Reference, string) {
	t.Helper()
	src, err := os.ReadFile("../../config.toml")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ParseReference(src)
	if err != nil {
		t.Fatal(err)
	}
	return ref, ConfigPage(ref, header)
}

// schemaKeys lists every key of the config schema by its dotted path, as
// sluiced decodes it (toml tags; types that decode themselves are leaves).
func schemaKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(reflect.TypeFor[toml.Unmarshaler]()) {
		return []string{prefix}
	}
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, schemaKeys(f.Type, strings.TrimPrefix(prefix+"."+name, "."))...)
	}
	return out
}

// TestConfigPageHasEveryKey: every key sluiced accepts is in
// sluice.toml(5), in its table's subsection, with what config.toml says
// about it.
func TestConfigPageHasEveryKey(t *testing.T) {
	ref, page := reference(t)
	have := map[string]bool{}
	for _, k := range ref.Keys() {
		have[k] = true
	}
	// Each subsection's text, by table.
	sub := map[string]string{}
	for _, part := range strings.Split(page, "\n.SS ")[1:] {
		head, body, _ := strings.Cut(part, "\n")
		table := strings.Trim(head, `"`)
		table = strings.TrimSuffix(table, " (optional)")
		table = strings.Trim(strings.ReplaceAll(table, `\-`, "-"), "[]")
		if table == "top level" {
			table = ""
		}
		sub[table] += body
	}
	keys := schemaKeys(reflect.TypeFor[config.Config](), "")
	if len(keys) < 40 {
		t.Fatalf("only %d schema keys found", len(keys))
	}
	for _, k := range keys {
		if !have[k] {
			t.Errorf("key %s is not in the config reference", k)
			continue
		}
		table, name := "", k
		if i := strings.LastIndex(k, "."); i >= 0 {
			table, name = k[:i], k[i+1:]
		}
		if !strings.Contains(sub[table], `\fB`+RoffEscape(name)+`\fR = `) {
			t.Errorf("key %s is not in sluice.toml(5) under [%s]", k, table)
		}
	}
	for _, want := range []string{
		`.TH "SLUICE.TOML" 5 "2026\-12\-04" "sluice 1.2.3"`,
		".SS \"[scheduler]\"\n",
		".TP\n\\fBmargin\\fR = \\fI\"250ms\"\\fR (default)\nSafety gap added to every upstream rate\\-limit window",
		".TP\n\\fBsocket\\fR = \\fI\"/run/sluice/sluice.sock\"\\fR (e.g.)\nPath of the Unix socket",
		// Keys under one comment share it.
		".TP\n\\fBapi_url\\fR = \\fI\"https://api.spotify.com\"\\fR (default)\n.TQ\n\\fBaccounts_url\\fR",
		".SS \"[providers.ineo.limits.spotify] (optional)\"\n",
		"redis_url: a secret: redis://",
		// The file's value formats table keeps its layout.
		"Value formats:\n.PP\n.RS 4\n.nf\n  durations  Go duration strings",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("sluice.toml(5) lacks %q", want)
		}
	}
	lint(t, page)
}

// TestDaemonPageHasEveryFlag: sluiced(8) lists every flag sluiced parses,
// with its default as it is without the environment.
func TestDaemonPageHasEveryFlag(t *testing.T) {
	fs, _ := daemonflags.New(func(string) string { return "" })
	page := DaemonPage(fs, header)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(page, ".TP\n\\fB"+RoffEscape("--"+f.Name)+"\\fR") {
			t.Errorf("sluiced(8) lacks --%s", f.Name)
		}
	})
	if n < 7 {
		t.Fatalf("only %d flags", n)
	}
	for _, want := range []string{
		`.TH "SLUICED" 8 "2026\-12\-04" "sluice 1.2.3"`,
		"\\fB\\-\\-config\\fR \\fIstring\\fR\nconfig file (env SLUICE_CONFIG) (default: /etc/sluice/config.toml)",
		".SH ENVIRONMENT\n", ".BR sluice.toml (5)",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("sluiced(8) lacks %q:\n%s", want, page)
		}
	}
	lint(t, page)
}

// lint has groff check the page, when it is installed: any warning
// (unknown request, bad escape) fails.
func lint(t *testing.T, page string) {
	t.Helper()
	if _, err := exec.LookPath("groff"); err != nil {
		t.Log("groff not installed: page not linted")
		return
	}
	cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff: %v\n%s", err, out)
	}
}
