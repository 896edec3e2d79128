// Package manref generates the man pages of sluiced(8) and of its config
// file, sluice.toml(5), from their sources of truth: sluiced's flag set
// (internal/daemonflags) and the commented example config, config.toml.
//
// config.toml is the one config reference. It is installed as
// /etc/sluice/config.toml, core/config's tests check that it names every
// key and that its values are the defaults, and this package renders it as
// sluice.toml(5), so a key documented there is in the manual too. A Go
// table of keys would be a second copy of the same text to keep in step.
package manref

import (
	"bytes"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Header is what every page's title line carries.
type Header struct {
	Date    time.Time
	Version string
}

// Reference is config.toml read as documentation.
type Reference struct {
	Intro    []string // the file's opening comment, line by line
	Sections []Section
}

// Section is the keys of one table ("" for the top level).
type Section struct {
	Table string
	// Commented is set when the table is shown commented out (optional).
	Commented bool
	Text      []string // the comment before the table header
	Items     []Item
}

// Item is one or more keys sharing one comment.
type Item struct {
	Keys []Key
	Text []string
}

// Key is one key as config.toml shows it.
type Key struct {
	Name  string
	Value string
	// Commented keys show an example; set keys show the default.
	Commented bool
	Note      string // a trailing "# ..." on the key's line
}

// FullName is the key's dotted path.
func (s Section) FullName(k Key) string {
	if s.Table == "" {
		return k.Name
	}
	return s.Table + "." + k.Name
}

var (
	keyLine   = regexp.MustCompile(`^(# ?)?([a-z0-9_]+) = (.*)$`)
	tableLine = regexp.MustCompile(`^(# ?)?\[([a-z0-9_.]+)\]\s*$`)
	noteSplit = regexp.MustCompile(`\s+# `)
)

// ParseReference reads the commented example config. A comment block runs
// until a key or table line, which it describes, or a blank line; keys
// that follow one another share the comment above the first.
func ParseReference(src []byte) (*Reference, error) {
	ref := &Reference{}
	cur := &Section{}
	var block []string
	last := -1 // index in cur.Items of the item a key with no comment of its own joins
	seenKey := false
	flush := func() {
		if len(block) == 0 {
			return
		}
		if !seenKey && len(cur.Items) == 0 && cur.Table == "" && ref.Intro == nil {
			ref.Intro = block
		} else {
			cur.Items = append(cur.Items, Item{Text: block})
		}
		block = nil
	}
	for n, line := range strings.Split(string(bytes.TrimRight(src, "\n")), "\n") {
		line = strings.TrimRight(line, " \t")
		switch {
		case line == "":
			flush()
			last = -1
		case tableLine.MatchString(line):
			m := tableLine.FindStringSubmatch(line)
			ref.Sections = append(ref.Sections, *cur)
			cur = &Section{Table: m[2], Commented: m[1] != "", Text: block}
			block, last = nil, -1
		case keyLine.MatchString(line):
			m := keyLine.FindStringSubmatch(line)
			k := Key{Name: m[2], Value: m[3], Commented: m[1] != ""}
			// No value in the file holds " # ", so this is a trailing note.
			if parts := noteSplit.Split(k.Value, 2); len(parts) == 2 {
				k.Value, k.Note = parts[0], parts[1]
			}
			seenKey = true
			if block == nil && last >= 0 {
				cur.Items[last].Keys = append(cur.Items[last].Keys, k)
				continue
			}
			cur.Items = append(cur.Items, Item{Keys: []Key{k}, Text: block})
			last = len(cur.Items) - 1
			block = nil
		case line == "#" || strings.HasPrefix(line, "# "):
			last = -1
			block = append(block, strings.TrimPrefix(strings.TrimPrefix(line, "#"), " "))
		default:
			return nil, fmt.Errorf("config reference line %d: neither a comment, a key nor a table: %q", n+1, line)
		}
	}
	flush()
	ref.Sections = append(ref.Sections, *cur)
	// The top level may hold only the intro.
	out := ref.Sections[:0]
	for _, s := range ref.Sections {
		if s.Table != "" || len(s.Items) > 0 {
			out = append(out, s)
		}
	}
	ref.Sections = out
	return ref, nil
}

// Keys lists every key's dotted path, in file order.
func (r *Reference) Keys() []string {
	var out []string
	for _, s := range r.Sections {
		for _, it := range s.Items {
			for _, k := range it.Keys {
				out = append(out, s.FullName(k))
			}
		}
	}
	return out
}

// ConfigPage renders sluice.toml(5).
func ConfigPage(ref *Reference, h Header) string {
	var b strings.Builder
	title(&b, "SLUICE.TOML", "5", h, "File formats")
	b.WriteString(".SH NAME\nsluice.toml \\- configuration file of sluiced\n")
	b.WriteString(".SH SYNOPSIS\n")
	b.WriteString(RoffLine("/etc/sluice/config.toml, or the file named by --config or $SLUICE_CONFIG") + "\n")
	b.WriteString(".SH DESCRIPTION\n")
	b.WriteString(".PP\n" + RoffLine("sluiced(8) reads its configuration from a TOML file. This page is generated from the example config shipped with sluice (config.toml), which lists every key with its default; the same file is installed as /etc/sluice/config.toml.") + "\n")
	b.WriteString(paragraphs(ref.Intro))
	b.WriteString(".SH KEYS\n")
	for _, s := range ref.Sections {
		name := "top level"
		if s.Table != "" {
			name = "[" + s.Table + "]"
			if s.Commented {
				name += " (optional)"
			}
		}
		b.WriteString(".SS " + QuoteArg(name) + "\n")
		b.WriteString(paragraphs(s.Text))
		for _, it := range s.Items {
			if len(it.Keys) == 0 {
				b.WriteString(paragraphs(it.Text))
				continue
			}
			for i, k := range it.Keys {
				if i == 0 {
					b.WriteString(".TP\n")
				} else {
					b.WriteString(".TQ\n")
				}
				what := "default"
				if k.Commented {
					what = "e.g."
				}
				b.WriteString(`\fB` + RoffEscape(k.Name) + `\fR = \fI` + RoffEscape(k.Value) + `\fR (` + what + ")\n")
			}
			b.WriteString(filled(it.Text))
			for i, k := range it.Keys {
				if k.Note == "" {
					continue
				}
				if i > 0 || len(it.Text) > 0 {
					b.WriteString(".br\n")
				}
				b.WriteString(RoffLine(k.Name+": "+k.Note) + "\n")
			}
		}
	}
	b.WriteString(".SH FILES\n.TP\n/etc/sluice/config.toml\nThe system service's config.\n")
	b.WriteString(".SH SEE ALSO\n.BR sluiced (8),\n.BR sluicectl (1)\n")
	return b.String()
}

// DaemonPage renders sluiced(8) from its flag set.
func DaemonPage(fs *flag.FlagSet, h Header) string {
	var b strings.Builder
	title(&b, "SLUICED", "8", h, "System Manager's Manual")
	b.WriteString(".SH NAME\nsluiced \\- local daemon fronting third\\-party web APIs\n")
	b.WriteString(".SH SYNOPSIS\n\\fBsluiced\\fR [\\fIOPTIONS\\fR]\n")
	b.WriteString(".SH DESCRIPTION\n")
	b.WriteString(paragraphs([]string{
		"sluiced is one local process that holds the credentials for iNeo, hellorf and Spotify, keeps each upstream's rate limit for all callers together, caches and coalesces answers, and serves local programs over a Unix socket. Each provider runs as a plugin process of its own, which only sluiced talks to.",
		"",
		"Its configuration is described in sluice.toml(5); it is reloaded when the file changes. sluicectl(1) is its command-line client.",
	}))
	b.WriteString(".SH OPTIONS\n")
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		b.WriteString(".TP\n\\fB" + RoffEscape("--"+f.Name) + "\\fR")
		if arg != "" {
			b.WriteString(" \\fI" + RoffEscape(arg) + "\\fR")
		}
		b.WriteString("\n")
		if f.DefValue != "" && f.DefValue != "false" {
			usage += " (default: " + f.DefValue + ")"
		}
		b.WriteString(RoffLine(usage) + "\n")
	})
	b.WriteString(".SH ENVIRONMENT\n")
	for _, e := range [][2]string{
		{"SLUICE_CONFIG", "the config file, unless --config names one"},
		{"SLUICE_SOCKET", "the socket path, unless --socket names one; it overrides the config's socket"},
		{"SLUICE_STATE_DIR", "the state directory, unless --state-dir names one; it overrides the config's state_dir"},
		{"STATE_DIRECTORY", "set by systemd's StateDirectory=: the default state directory"},
		{"CREDENTIALS_DIRECTORY", "set by systemd's LoadCredential=: where relative file: secrets are looked up"},
		{"XDG_RUNTIME_DIR, XDG_STATE_HOME", "the default socket and state directory of a daemon not run as root"},
	} {
		b.WriteString(".TP\n.B " + RoffEscape(e[0]) + "\n" + RoffLine(e[1]) + "\n")
	}
	b.WriteString(".SH EXIT STATUS\n.TP\n.B 0\nstopped by SIGINT or SIGTERM, or --version, --check-config with a valid config, or --help\n" +
		".TP\n.B 1\nfailed to start or run, or --check-config with an invalid config\n.TP\n.B 2\nbad usage\n")
	b.WriteString(".SH FILES\n.TP\n/etc/sluice/config.toml\nThe default config file.\n.TP\n/run/sluice/sluice.sock\nThe system service's socket.\n.TP\n/var/lib/sluice\nThe system service's state: rate-limit history, pauses, the purchase guard.\n")
	b.WriteString(".SH SEE ALSO\n.BR sluicectl (1),\n.BR sluice.toml (5)\n")
	return b.String()
}

func title(b *strings.Builder, name, section string, h Header, manual string) {
	fmt.Fprintf(b, ".TH %s %s %s %s %s\n", QuoteArg(name), section, QuoteArg(h.Date.Format("2006-01-02")), QuoteArg("sluice "+h.Version), QuoteArg(manual))
	// No hyphenation and a ragged right margin: key and flag names broken
	// across lines would be hard to copy.
	b.WriteString(".nh\n.ad l\n")
}

// paragraphs renders comment lines: blank lines separate paragraphs, and
// indented lines (tables, examples) keep their layout.
func paragraphs(lines []string) string {
	var b strings.Builder
	for i := 0; i < len(lines); {
		switch l := lines[i]; {
		case strings.TrimSpace(l) == "":
			i++
		case strings.HasPrefix(l, " "):
			b.WriteString(".PP\n.RS 4\n.nf\n")
			for ; i < len(lines) && (strings.HasPrefix(lines[i], " ") || strings.TrimSpace(lines[i]) == "" && i+1 < len(lines) && strings.HasPrefix(lines[i+1], " ")); i++ {
				b.WriteString(RoffLine(lines[i]) + "\n")
			}
			b.WriteString(".fi\n.RE\n")
		default:
			b.WriteString(".PP\n")
			for ; i < len(lines) && strings.TrimSpace(lines[i]) != "" && !strings.HasPrefix(lines[i], " "); i++ {
				b.WriteString(RoffLine(lines[i]) + "\n")
			}
		}
	}
	return b.String()
}

// filled renders a key's description as the body of its tagged paragraph.
func filled(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			b.WriteString(".IP\n")
			continue
		}
		b.WriteString(RoffLine(strings.TrimSpace(l)) + "\n")
	}
	return b.String()
}

// RoffEscape makes text literal for roff: "\" is its escape character, and
// "-" must be \- to stay a hyphen-minus that can be copied into a shell
// (groff may render a bare "-" as a typographic hyphen).
func RoffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

// RoffLine escapes one text line; a line starting with "." or "'" would be
// read as a request (\& is a zero-width character that prevents that).
func RoffLine(s string) string {
	s = RoffEscape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// QuoteArg quotes a request's argument (e.g. of .TH).
func QuoteArg(s string) string {
	return `"` + strings.ReplaceAll(RoffEscape(s), `"`, `\(dq`) + `"`
}
